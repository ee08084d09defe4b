"""A labeled corpus of MangaAssist text: chat turns, prompts, retrieved chunks and JSON tool
arguments in English and Japanese, with PII (labeled) and the look-alikes a shopping assistant
is full of (unlabeled: ISBNs, JAN codes, ASINs, prices, dates, volumes, versions, ids).

``build()`` returns ``[(text, [(start, end, entity), ...])]``. Texts are assembled from
templates and value pools with a fixed seed, so every value form below appears in several
contexts; the hand-written ``FIXED`` cases cover what templates cannot (labels, adjacency).
"""

from __future__ import annotations

import json
import random
import re

PII: dict[str, list[str]] = {
    "EMAIL": [
        "taro.yamada@example.co.jp",
        "hanako_s+manga@gmail.com",
        "j.smith@mail.example.org",
        "ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ",
        "Sakura.Kinomoto@Example.COM",
        "reader-2026@docomo.ne.jp",
        "m_tanaka@i.softbank.jp",
        "alex.o'brien@example.ie".replace("'", ""),
        "support.user@ezweb.ne.jp",
        "k.sato@ｍａｉｌ.example.com",
    ],
    "PHONE": [
        "090-1234-5678",
        "080 9876 5432",
        "070.1111.2222",
        "09012345678",
        "０９０－１２３４－５６７８",
        "090ー8765ー4321",
        "+81 90 1234 5678",
        "+81-90-1234-5678",
        "+81 (0)3 1234 5678",
        "03-1234-5678",
        "06-6123-4567",
        "045-123-4567",
        "0467-12-3456",
        "(03) 1234-5678",
        "03(1234)5678",
        "0120-123-456",
        "0800-123-4567",
        "0570-064-123",
        "０３－１２３４－５６７８",
        "(415) 555-0132",
        "415-555-0132",
        "415.555.0132",
        "+1 415-555-0132",
        "+1 (415) 555-0132",
        "1-800-555-0199",
        "+442071838750",
        "+44 20 7183 8750",
        "+33 1 42 68 53 00",
        "+8613812345678",
        "+61 2 9374 4000",
    ],
    "ORDER_ID": [
        "503-1234567-7654321",
        "114-9876543-2109876",
        "D01-1234567-1234567",
        "250-0000001-9999999",
        "１１４－９８７６５４３－２１０９８７６",
    ],
    "CARD": [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555 5555 5555 4444",
        "5105-1051-0510-5100",
        "3782 822463 10005",
        "378282246310005",
        "6011 1111 1111 1117",
        "3530 1113 3330 0000",
        "４１１１ １１１１ １１１１ １１１１",
    ],
    "IP": [
        "192.168.0.12",
        "10.0.0.254",
        "203.0.113.77",
        "172.16.254.1",
        "2001:db8::8a2e:370:7334",
        "fe80::1ff:fe23:4567:890a",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "198.51.100.23",
    ],
    "SECRET": [
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAJEXAMPLEXEG2JICE",
        "AKIA2E0A8F3B244C9986",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ],
}

# Look-alikes that must survive untouched.
NEGATIVES = [
    "ISBN 978-4-08-883415-4",
    "ISBN978-4-09-850348-1",
    "ISBN-10 4-08-883415-1",
    "ISBN 4088834151",
    "ASIN: 0306406152",
    "9784088834153",
    "JAN 4902370548501",
    "4901234567894",
    "B0C1234XYZ",
    "B08N5WRWNW",
    "¥1,980",
    "¥528",
    "$12.99",
    "US$1,299.00",
    "2026-03-24",
    "2026/03/24",
    "2026年3月24日",
    "03/24/2026",
    "Vol. 107",
    "第107巻",
    "第1123話",
    "vol.17",
    "v2.4.1",
    "recommendation-2.4",
    "product-qa-3.1",
    "rag-v5",
    "version 1.2.0.3",
    "2026.11.20-rc1",
    "4bf92f3577b34da6a3ce929d0e0e4736",
    "00f067aa0ba902b7",
    "resp_01HZZX4Q9W2K8M3N5P7R",
    "req-7-000123",
    "sess-0a1b2c3d4e5f",
    "〒150-0001",
    "〒060-0001",
    "94105-1234",
    "10:00-18:00",
    "14:30:05",
    "12,345,678 copies",
    "4111 1111 1111 1112",
    "1234 5678 9012 3456",
    "123-4567",
    "SKU 1234-5678-90",
    "1234567",
    "12345678901234567",
    "2026-03-24T10:15:30Z",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "amazon.titan-embed-text-v2:0",
    "std::vector",
    "ab:cd:ef",
    "MAC 00:1A:2B:3C:4D:5E",
    "@manga_fan",
    "1.5x speed",
    "page 12 of 240",
    "chapter 3.5",
    "top 20",
    "3 x ¥1,320 = ¥3,960",
    "ポイント1,234pt",
    "4.8★ (12,034件)",
    "0.97",
    "rule grounding_check-v3",
]

TEMPLATES = [
    "Hi, my email is {EMAIL} and my order {ORDER_ID} still hasn't arrived. It was {NEG} and {NEG}.",
    "Please call me at {PHONE} about {NEG}, not today though.",
    "{NEG} の在庫はありますか？連絡先は {PHONE} です。",
    "注文番号 {ORDER_ID} の {NEG} がまだ届きません。メール: {EMAIL}",
    "I paid with card {CARD} for {NEG} ({NEG}), can you refund it?",
    "カード番号{CARD}で支払いました。{NEG}、{NEG}。",
    "System: You are MangaAssist. Customer context: email={EMAIL}, phone={PHONE}, last order {ORDER_ID}.",
    "Retrieved chunk [policy_12]: Returns within 30 days. Contact {EMAIL} or {PHONE}. Ref {NEG}.",
    "Retrieved chunk [product_88]: {NEG}, {NEG}, released {NEG}. Price {NEG}.",
    "debug: client ip {IP} forwarded for {IP}, trace {NEG}",
    "request failed: Authorization: Bearer {SECRET} (user {EMAIL})",
    "config leaked in log: aws_access_key_id={SECRET} region=us-east-1 {NEG}",
    "もしもし、{PHONE}に折り返しお願いします。{NEG}の件です。",
    "Ship to my office, tel {PHONE} / alt {PHONE}. Gift wrap for {NEG}.",
    "{NEG} {NEG} {NEG}",
    "Is {NEG} the same as {NEG}? Also is {NEG} in stock?",
    "My new number is {PHONE}, old email {EMAIL}, and I'm at {IP} if that helps.",
    "Order #{ORDER_ID} — charged to {CARD} on {NEG}.",
    "{EMAIL}に{NEG}の発売日を教えてください",
    "Tool call failed for {NEG}: {PHONE}",
]

TOOL_ARGS = [
    {"tool": "lookup_order", "args": {"order_id": "{ORDER_ID}", "email": "{EMAIL}", "isbn": "{NEG}"}},
    {"tool": "update_contact", "args": {"phone": "{PHONE}", "note": "call after 6pm, re {NEG}"}},
    {"tool": "charge", "args": {"card": "{CARD}", "amount": "{NEG}", "items": ["{NEG}", "{NEG}"]}},
    {"tool": "search_products", "args": {"query": "{NEG}", "filters": {"price_max": "{NEG}", "release": "{NEG}"}}},
    {"tool": "audit", "args": {"source_ip": "{IP}", "token": "Bearer {SECRET}", "trace": "{NEG}"}},
]

FIXED: list[tuple[str, list[tuple[str, str]]]] = [
    ("電話090-1234-5678です", [("090-1234-5678", "PHONE")]),
    ("連絡先はtaro@example.co.jpまで", [("taro@example.co.jp", "EMAIL")]),
    ("Order # 12345678901234567 please", [("12345678901234567", "ORDER_ID")]),
    ("注文番号：11498765432109876", [("11498765432109876", "ORDER_ID")]),
    ("email me at a.b@example.com.", [("a.b@example.com", "EMAIL")]),
    ("+81 90 1234 5678 2026年3月24日に届きました", [("+81 90 1234 5678", "PHONE")]),
    ("IPv4-mapped ::ffff:192.0.2.128 seen", [("::ffff:192.0.2.128", "IP")]),
    ("key=AKIAIOSFODNN7EXAMPLE&x=1", [("AKIAIOSFODNN7EXAMPLE", "SECRET")]),
    (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        [("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "SECRET")],
    ),
    (
        "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        [("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "SECRET")],
    ),
    ("Bearer tokens are required for the partner API", []),
    ("The bearer of this card, 4111 1111 1111 1112, is invalid", []),
    ("Call 03-1234-5678 or 03-1234-5679.", [("03-1234-5678", "PHONE"), ("03-1234-5679", "PHONE")]),
    ("Visit 10.0.0.1:8080/health", [("10.0.0.1", "IP")]),
    # an unseparated US number looks like an ISBN-10: a phone because of "text me" (a known miss
    # until issue 18, found since; the kinds corpus has many such numbers, with and without context)
    ("text me 4155550132 tonight", [("4155550132", "PHONE")]),
    ("（090）1234-5678 まで", [("（090）1234-5678", "PHONE")]),
    ("tel:+81-3-1234-5678", [("+81-3-1234-5678", "PHONE")]),
    ("ワンピース 107巻 ISBN 978-4-08-883415-4 ¥528（税込）2026年3月24日発売", []),
]


def _fill(template: str, rng: random.Random, labels: list[tuple[str, str]]) -> str:
    def repl(m: re.Match[str]) -> str:
        kind = m.group(1)
        if kind == "NEG":
            return rng.choice(NEGATIVES)
        value = rng.choice(PII[kind])
        labels.append((value, kind))
        return value

    return re.sub(r"\{([A-Z_]+)\}", repl, template)


def _locate(text: str, labels: list[tuple[str, str]]) -> list[tuple[int, int, str]]:
    spans = []
    pos = 0
    for value, kind in labels:  # labels are in text order
        start = text.index(value, pos)
        spans.append((start, start + len(value), kind))
        pos = start + len(value)
    return spans


def build(seed: int = 2026, rounds: int = 10) -> list[tuple[str, list[tuple[int, int, str]]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(rounds):
        for template in TEMPLATES:
            labels: list[tuple[str, str]] = []
            text = _fill(template, rng, labels)
            out.append((text, _locate(text, labels)))
        for tool in TOOL_ARGS:
            labels = []
            text = _fill(json.dumps(tool, ensure_ascii=False), rng, labels)
            out.append((text, _locate(text, labels)))
    for text, fixed in FIXED:
        out.append((text, _locate(text, fixed)))
    for value in NEGATIVES:  # every look-alike alone, too
        out.append((f"{value}", []))
    return out
