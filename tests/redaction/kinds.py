"""A second labelled corpus, organised by *kind*: the formats issue 18 found missed (phones glued
to a label, digits right after a JSON ``\\uXXXX`` escape, bare 10-digit US numbers, ``00``
international prefixes and ``(0)`` trunk digits, URL-encoded e-mails), the types added with it
(SSN, My Number, IBAN, passport numbers, JP and US street addresses), the old formats kept as a
baseline, and look-alikes for each (four-part versions, loopback and unspecified IPs, 10-digit
numbers without phone context, ISBNs, ASINs, SKUs, tracking numbers, prices, dates, postal codes
alone, 12-digit numbers without a My Number label, IBAN-shaped codes, volume ranges, ...).

Everything is generated in code from a seed: values come from format generators (random digits,
valid check digits where a format has one), and each value is wrapped in a *carrier*: English or
Japanese prose, a chat turn as raw JSON text (``ensure_ascii`` on, so non-ASCII text becomes
``\\uXXXX`` escapes, and off), a tool argument as the parsed string and as raw JSON text, a tool
call whose ``arguments`` is JSON text inside JSON (OpenAI style, escaped twice), HTTP headers
(as one text and as a header value alone), a query string (RFC 3986 and form encoding), a log line.

Three parts: ``build("tune")`` (seed 11, the ``TUNE`` templates) is what the detectors were tuned
on; ``build("heldout")`` (seed 29, the ``HELDOUT`` templates: other sentences, keys, headers and
log formats) was first run once the tune part passed (recall 0.9949, precision 0.9993 then; its
seven misses showed four bugs that were fixed, so it is no longer blind); ``build("fresh")``
(seed 47, the ``FRESH`` templates: markdown, HTML, CSV, YAML, mail quotes, JSON and access-log
lines, written after those fixes) is the blind part. All share the value generators, so the
held-out parts test the carriers and contexts, not unseen value shapes.

A record is ``Record(text, gold, negatives, carrier)``: ``gold`` holds ``(start, end, entity,
kind)`` of every PII value, ``negatives`` ``(start, end, kind)`` of every look-alike, both as
offsets into ``text`` (in the encoded form when the carrier encodes).
"""

from __future__ import annotations

import json
import random
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

Piece = tuple[str, str | None, str]
"""``(text, entity, kind)``: ``entity`` None for context text (kind "") or a look-alike (kind "neg_...")."""
Fragment = list[Piece]


@dataclass(frozen=True)
class Record:
    text: str
    gold: tuple[tuple[int, int, str, str], ...]
    negatives: tuple[tuple[int, int, str], ...]
    carrier: str


def ctx(text: str) -> Piece:
    return (text, None, "")


def pii(text: str, entity: str, kind: str) -> Piece:
    return (text, entity, kind)


def neg(text: str, kind: str) -> Piece:
    return (text, None, kind)


# --------------------------------------------------------------------------- value generators


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


def jp_number(rng: random.Random) -> tuple[str, str]:
    """A Japanese number as (area-or-prefix, rest) groups: mobile, IP phone, landline, toll free."""
    kind = rng.choice(["mobile", "mobile", "ip", "land2", "land3", "land4", "free"])
    if kind == "mobile":
        return rng.choice(["090", "080", "070"]), digits(rng, 8)
    if kind == "ip":
        return "050", digits(rng, 8)
    if kind == "land2":
        return rng.choice(["03", "06"]), digits(rng, 8)
    if kind == "land3":
        return rng.choice(["045", "052", "075", "011", "092", "078", "022"]), rng.choice("23456789") + digits(rng, 6)
    if kind == "land4":
        return rng.choice(["0467", "0877", "0266", "0554", "0985"]), rng.choice("23456789") + digits(rng, 5)
    return rng.choice(["0120", "0570"]), digits(rng, 6)


def jp_phone(rng: random.Random) -> str:
    area, rest = jp_number(rng)
    n = len(area) + len(rest)
    if area in ("0120", "0570"):
        mid, last = rest[:3], rest[3:]
    elif n == 11:
        mid, last = rest[:4], rest[4:]
    else:
        mid, last = rest[: len(rest) - 4], rest[-4:]
    form = rng.randrange(9)
    if form == 0:
        return f"{area}{mid}{last}"
    if form == 1:
        return f"{area} {mid} {last}"
    if form == 2:
        return f"{area}.{mid}.{last}"
    if form == 3 and n == 10:
        return f"({area}){mid}-{last}"
    if form == 4 and n == 10:
        return f"{area}({mid}){last}"
    if form == 5:
        return fullwidth(f"{area}-{mid}-{last}")
    if form == 6:
        return f"{area}ー{mid}ー{last}"
    return f"{area}-{mid}-{last}"


def jp_intl(rng: random.Random) -> str:
    area, rest = jp_number(rng)
    a = area[1:]
    if area in ("0120", "0570"):
        mid, last = rest[:3], rest[3:]
    elif len(area) + len(rest) == 11:
        mid, last = rest[:4], rest[4:]
    else:
        mid, last = rest[:-4], rest[-4:]
    return rng.choice([f"+81-{a}-{mid}-{last}", f"+81 {a} {mid} {last}", f"+81{a}{mid}{last}", f"+81 {a}-{mid}-{last}"])


def nanp(rng: random.Random) -> tuple[str, str, str]:
    while True:
        area = rng.choice("23456789") + digits(rng, 2)
        if area[1:] != "11":
            break
    return area, rng.choice("23456789") + digits(rng, 2), digits(rng, 4)


def us_phone(rng: random.Random) -> str:
    a, b, c = nanp(rng)
    return rng.choice(
        [
            f"({a}) {b}-{c}",
            f"{a}-{b}-{c}",
            f"{a}.{b}.{c}",
            f"{a} {b} {c}",
            f"+1 {a}-{b}-{c}",
            f"+1 ({a}) {b}-{c}",
            f"1-{a}-{b}-{c}",
            f"+1{a}{b}{c}",
            f"({a}){b}-{c}",
        ]
    )


INTL = [  # (country code, group sizes of the national number)
    ("44", (2, 4, 4)),
    ("44", (4, 6)),
    ("33", (1, 2, 2, 2, 2)),
    ("49", (2, 8)),
    ("49", (3, 7)),
    ("86", (3, 4, 4)),
    ("61", (1, 4, 4)),
    ("82", (2, 4, 4)),
    ("65", (4, 4)),
    ("34", (3, 3, 3)),
    ("39", (2, 4, 4)),
    ("852", (4, 4)),
]


def intl_groups(rng: random.Random) -> tuple[str, list[str]]:
    cc, sizes = rng.choice(INTL)
    groups = [rng.choice("123456789") + digits(rng, sizes[0] - 1)] + [digits(rng, n) for n in sizes[1:]]
    return cc, groups


def intl_phone(rng: random.Random) -> str:
    cc, g = intl_groups(rng)
    return rng.choice([f"+{cc} " + " ".join(g), f"+{cc}" + "".join(g), f"+{cc}-" + "-".join(g)])


def intl00(rng: random.Random) -> str:
    if rng.random() < 0.25:  # a US or Japanese number dialled with 00 / 010
        a, b, c = nanp(rng)
        return rng.choice([f"001 {a} {b} {c}", f"001-{a}-{b}-{c}", f"010-1-{a}-{b}-{c}"])
    if rng.random() < 0.2:
        area, rest = jp_number(rng)
        return rng.choice([f"0081-{area[1:]}-{rest[:-4]}-{rest[-4:]}", f"0081 {area[1:]} {rest[:-4]} {rest[-4:]}"])
    cc, g = intl_groups(rng)
    return rng.choice(
        [
            f"00{cc} " + " ".join(g),
            f"00{cc}-" + "-".join(g),
            f"00 {cc} " + " ".join(g),
            f"00{cc} " + "".join(g),
            f"010-{cc}-" + "-".join(g),
            f"010 {cc} " + " ".join(g),
        ]
    )


def intl_trunk(rng: random.Random) -> str:
    if rng.random() < 0.5:
        area, rest = jp_number(rng)
        mid, last = rest[:-4], rest[-4:]
        a = area[1:]
        return rng.choice(
            [
                f"+81 (0){a}-{mid}-{last}",
                f"+81(0){a}-{mid}-{last}",
                f"+81 (0) {a} {mid} {last}",
                f"+81-(0){a}-{mid}-{last}",
            ]
        )
    cc, g = rng.choice([("44", (2, 4, 4)), ("49", (2, 7)), ("33", (1, 2, 2, 2, 2)), ("39", (2, 4, 4))])
    groups = [rng.choice("123456789") + digits(rng, g[0] - 1)] + [digits(rng, n) for n in g[1:]]
    return rng.choice([f"+{cc} (0){groups[0]} " + " ".join(groups[1:]), f"+{cc} (0) " + " ".join(groups)])


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + digits(rng, length - len(prefix) - 1)
    for check in "0123456789":
        n = body + check
        total = 0
        for i, ch in enumerate(reversed(n)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return n
    raise AssertionError


def card(rng: random.Random) -> str:
    brand = rng.choice(["visa", "visa", "mc", "mc2", "jcb", "amex", "disc"])
    if brand == "amex":
        n = luhn_complete(rng.choice(["34", "37"]), 15, rng)
        return rng.choice([f"{n[:4]} {n[4:10]} {n[10:]}", f"{n[:4]}-{n[4:10]}-{n[10:]}", n])
    prefix = {"visa": "4", "mc": rng.choice(["51", "52", "53", "54", "55"]), "mc2": "2221", "jcb": "35"}.get(
        brand, "6011"
    )
    n = luhn_complete(prefix + (str(rng.randint(28, 89)) if brand == "jcb" else ""), 16, rng)
    sep = rng.choice([" ", "-", ""])
    text = sep.join([n[:4], n[4:8], n[8:12], n[12:]])
    return fullwidth(text) if rng.random() < 0.05 else text


def order_id(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return f"D01-{digits(rng, 7)}-{digits(rng, 7)}"
    text = f"{rng.choice('123456789')}{digits(rng, 2)}-{digits(rng, 7)}-{digits(rng, 7)}"
    return fullwidth(text) if rng.random() < 0.05 else text


LOCALS = ["taro.yamada", "hanako_s", "j.smith", "sakura.k", "ken-ichi", "m_tanaka", "reader2026", "alex.obrien"]
DOMAINS = [
    "gmail.com",
    "yahoo.co.jp",
    "docomo.ne.jp",
    "ezweb.ne.jp",
    "i.softbank.jp",
    "icloud.com",
    "outlook.jp",
    "live.jp",
    "example.co.jp",
    "mail.example.org",
    "Example.COM",
]


def email(rng: random.Random) -> str:
    local = rng.choice(LOCALS) + rng.choice(["", "", str(rng.randint(1, 999)), "+manga", "+shop"])
    if rng.random() < 0.15:
        local = local.capitalize()
    return f"{local}@{rng.choice(DOMAINS)}"


def ipv4(rng: random.Random) -> str:
    first = rng.choice([10, 172, 192, 203, 198, 100, 52, 34, 13, 61, 126, 153, 210, 223])
    if first == 172:
        rest = [rng.randint(16, 31), rng.randint(0, 255), rng.randint(1, 254)]
    elif first == 192:
        rest = [168, rng.randint(0, 255), rng.randint(1, 254)]
    else:
        rest = [rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254)]
    return ".".join(str(x) for x in [first, *rest])


def ipv6(rng: random.Random) -> str:
    def h() -> str:
        return f"{rng.randint(1, 0xFFFF):x}"

    return rng.choice(
        [
            f"2001:db8::{h()}:{h()}",
            f"2001:db8:{h()}:{h()}::{h()}",
            f"fe80::{h()}:{h()}:{h()}:{h()}",
            f"2400:{h()}:{h()}:{h()}:{h()}:{h()}:{h()}:{h()}",
            f"2404:6800:4004:{h()}::200e",
        ]
    )


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def secret(rng: random.Random) -> tuple[str, str]:
    """(prefix context, secret value)"""
    k = rng.randrange(3)
    if k == 0:
        return "", rng.choice(["AKIA", "ASIA"]) + "".join(
            rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16)
        )
    if k == 1:
        tok = "".join(rng.choice(B64) for _ in range(rng.randint(24, 40)))
        return "Bearer ", tok[:5] + str(rng.randint(0, 9)) + tok[5:]

    def seg(n: int) -> str:
        return "".join(rng.choice(B64 + "-_") for _ in range(n))

    return "", "eyJ" + seg(rng.randint(16, 30)) + "." + seg(rng.randint(20, 40)) + "." + seg(43)


def ssn(rng: random.Random) -> str:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def my_number_digits(rng: random.Random) -> str:
    body = digits(rng, 11)
    total = sum(int(body[10 - i]) * (i + 2 if i < 6 else i - 4) for i in range(11))
    r = total % 11
    return body + str(0 if r <= 1 else 11 - r)


IBAN_FORMATS = {  # country: BBAN pattern (n digit, a upper letter, c either)
    "DE": "n" * 18,
    "GB": "aaaa" + "n" * 14,
    "FR": "n" * 10 + "c" * 11 + "nn",
    "NL": "aaaa" + "n" * 10,
    "ES": "n" * 20,
    "IT": "a" + "n" * 10 + "c" * 12,
    "CH": "n" * 5 + "c" * 12,
    "BE": "n" * 12,
    "AT": "n" * 16,
    "PL": "n" * 24,
    "SE": "n" * 20,
    "IE": "aaaa" + "n" * 14,
}


def iban_check(cc: str, bban: str) -> str:
    moved = bban + cc + "00"
    num = int("".join(str(int(ch, 36)) for ch in moved))
    return f"{98 - num % 97:02d}"


def iban(rng: random.Random) -> str:
    cc = rng.choice(sorted(IBAN_FORMATS))
    bban = "".join(
        rng.choice("0123456789")
        if p == "n"
        else rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ" + ("0123456789" if p == "c" else ""))
        for p in IBAN_FORMATS[cc]
    )
    compact = cc + iban_check(cc, bban) + bban
    if rng.random() < 0.6:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


def passport(rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    return rng.choice(
        [
            rng.choice(letters) + rng.choice(letters) + digits(rng, 7),
            rng.choice(letters) + digits(rng, 8),
            rng.choice("123456789") + digits(rng, 8),
            rng.choice(letters) + digits(rng, 7),
        ]
    )


PREFS = [
    "東京都",
    "大阪府",
    "京都府",
    "北海道",
    "神奈川県",
    "愛知県",
    "福岡県",
    "埼玉県",
    "千葉県",
    "兵庫県",
    "宮城県",
    "広島県",
    "長野県",
    "沖縄県",
]
MUNIS = [
    "渋谷区",
    "新宿区",
    "世田谷区",
    "港区",
    "横浜市西区",
    "横浜市港北区",
    "大阪市北区",
    "京都市中京区",
    "札幌市中央区",
    "名古屋市中村区",
    "福岡市博多区",
    "さいたま市大宮区",
    "つくば市",
    "川崎市中原区",
    "神戸市中央区",
    "仙台市青葉区",
    "鎌倉市",
    "松本市",
    "西多摩郡瑞穂町",
    "那覇市",
]
TOWNS = [
    "神宮前",
    "西新宿",
    "六本木",
    "梅田",
    "大通西",
    "みなとみらい",
    "栄",
    "天神",
    "桜木町",
    "玉川",
    "南青山",
    "本町",
    "錦",
    "北沢",
    "小町",
    "",
]


def jp_address(rng: random.Random) -> str:
    a, b, c = rng.randint(1, 9), rng.randint(1, 30), rng.randint(1, 40)
    block = rng.choice(
        [
            f"{a}-{b}-{c}",
            fullwidth(f"{a}-{b}-{c}"),
            f"{a}丁目{b}番{c}号",
            f"{a}丁目{b}-{c}",
            f"{b}-{c}",
            f"{a}-{b}-{c}-{rng.randint(101, 1205)}",
            f"{rng.randint(10, 999)}番地",
            f"{rng.randint(10, 999)}番地{a}",
            f"{a}ー{b}ー{c}",
        ]
    )
    pref = rng.choice(PREFS) if rng.random() < 0.6 else ""
    return f"{pref}{rng.choice(MUNIS)}{rng.choice(TOWNS)}{block}"


STREETS = [
    "Evergreen",
    "Main",
    "Oak",
    "Maple",
    "Pennsylvania",
    "Elm",
    "Washington",
    "Lake Shore",
    "Sunset",
    "Martin Luther King Jr",
    "5th",
    "34th",
    "1st",
    "Old Mill",
    "Cedar Creek",
    "Spring Valley",
    "Ocean View",
    "Mt Lee",
    "Park",
    "Market",
]
SUFFIXES = [
    "Terrace",
    "St",
    "Street",
    "Ave",
    "Avenue",
    "Rd",
    "Road",
    "Blvd",
    "Boulevard",
    "Dr",
    "Drive",
    "Ln",
    "Lane",
    "Way",
    "Ct",
    "Pl",
    "Circle",
    "Pkwy",
    "Hwy",
]


def us_address(rng: random.Random) -> str:
    num = str(rng.randint(1, 19999)) + (rng.choice("AB") if rng.random() < 0.05 else "")
    pre = rng.choice(["", "", "", "N ", "W ", "S ", "E "])
    post = rng.choice(["", "", "", "", " NW", " SE"])
    unit = rng.choice(["", "", "", ", Apt 4B", " Apt 12", " Suite 200", " #12", ", Unit 5", " Ste 310"])
    return f"{num} {pre}{rng.choice(STREETS)} {rng.choice(SUFFIXES)}{post}{unit}"


# --------------------------------------------------------------------------- kinds: fragments

GLUE_LABELS = [
    "TEL",
    "Tel",
    "tel",
    "FAX",
    "Fax",
    "TEL/FAX",
    "Phone",
    "PHONE",
    "Mobile",
    "Cell",
    "携帯",
    "電話",
    "ＴＥＬ",
    "Tel.",
    "TEL:",
    "mobile",
]
ORDER_GLUE = ["order", "Order", "ORDER", "orderid", "OrderID", "order_id", "OrderNo", "注文", "注文番号", "ordernumber"]
US_BEFORE = [
    "call me at ",
    "Call ",
    "text me ",
    "Text me at ",
    "my cell is ",
    "cell: ",
    "Mobile ",
    "mobile: ",
    "phone ",
    "Phone number: ",
    "tel ",
    "TEL:",
    "reach me on ",
    "my number is ",
    "ph: ",
    "WhatsApp ",
    "SMS ",
    "電話 ",
    "携帯：",
    "+1 ",
    "(+1) ",
    "call back ",
    "fax ",
    "contact number ",
]
US_AFTER = [" (cell)", " is my cell", " (mobile)", " - call anytime", "に電話してください", " is my phone"]
US_JSON_KEYS = ["phone", "phone_number", "tel", "mobile", "cell", "contact_phone", "customerPhone", "sms_to"]
SSN_LABELS = ["SSN ", "SSN: ", "ssn=", "social security number ", "Social Security No. ", "SSN#"]
MYNUM_LABELS = [
    "マイナンバー ",
    "マイナンバー：",
    "個人番号 ",
    "個人番号は",
    "My Number: ",
    "my number ",
    "mynumber=",
    "マイナンバーは",
]
PASSPORT_LABELS = [
    "passport ",
    "Passport No. ",
    "passport number ",
    "Passport#",
    "パスポート番号 ",
    "旅券番号：",
    "passport: ",
    "パスポート番号は",
]
IBAN_LABELS = ["", "", "IBAN ", "IBAN: ", "iban=", "振込先 IBAN "]


def k_email(rng: random.Random) -> Fragment:
    e = email(rng)
    if rng.random() < 0.08:
        e = fullwidth(e)
    return [pii(e, "EMAIL", "email")]


def k_email_urlenc(rng: random.Random) -> Fragment:
    e = email(rng)
    enc = urllib.parse.quote(e, safe="")
    if rng.random() < 0.25:
        enc = enc.replace("%", "%25")  # encoded twice (a URL inside a URL)
    before = rng.choice(["email=", "mail=", "to=", "u=", "login=", "", "mailto:", "?email="])
    return [ctx(before), pii(enc, "EMAIL", "email_urlenc")]


def k_phone_jp(rng: random.Random) -> Fragment:
    return [pii(jp_phone(rng), "PHONE", "phone_jp")]


def k_phone_glued(rng: random.Random) -> Fragment:
    label = rng.choice(GLUE_LABELS)
    r = rng.random()
    if r < 0.2:
        value = jp_intl(rng)
    else:
        area, rest = jp_number(rng)
        value = area + rest if r < 0.6 else f"{area}-{rest[:-4]}-{rest[-4:]}"
    if label == "ＴＥＬ" and rng.random() < 0.5:
        value = fullwidth(value)
    return [ctx(label), pii(value, "PHONE", "phone_glued")]


def k_phone_us_sep(rng: random.Random) -> Fragment:
    return [pii(us_phone(rng), "PHONE", "phone_us_sep")]


def k_phone_us_bare(rng: random.Random) -> Fragment:
    a, b, c = nanp(rng)
    value = a + b + c
    if rng.random() < 0.1:
        value = "1" + value
    r = rng.random()
    if r < 0.6:
        before = rng.choice(US_BEFORE)
        if before == "+1 ":  # the country code is part of the number
            return [pii(before + value, "PHONE", "phone_us_bare")]
        return [ctx(before), pii(value, "PHONE", "phone_us_bare")]
    if r < 0.8:
        return [pii(value, "PHONE", "phone_us_bare"), ctx(rng.choice(US_AFTER))]
    key = rng.choice(US_JSON_KEYS)
    return [ctx(f'"{key}": "'), pii(value, "PHONE", "phone_us_bare"), ctx('"')]


def k_phone_intl(rng: random.Random) -> Fragment:
    return [pii(intl_phone(rng) if rng.random() < 0.6 else jp_intl(rng), "PHONE", "phone_intl")]


def k_phone_intl00(rng: random.Random) -> Fragment:
    return [pii(intl00(rng), "PHONE", "phone_intl00")]


def k_phone_trunk(rng: random.Random) -> Fragment:
    return [pii(intl_trunk(rng), "PHONE", "phone_trunk")]


def k_order(rng: random.Random) -> Fragment:
    return [
        ctx(rng.choice(["order ", "Order #", "注文番号 ", "", "order id: "])),
        pii(order_id(rng), "ORDER_ID", "order"),
    ]


def k_order_glued(rng: random.Random) -> Fragment:
    return [ctx(rng.choice(ORDER_GLUE)), pii(order_id(rng), "ORDER_ID", "order_glued")]


def k_card(rng: random.Random) -> Fragment:
    return [pii(card(rng), "CARD", "card")]


def k_ipv4(rng: random.Random) -> Fragment:
    before = rng.choice(["client_ip=", "from ", "X-Forwarded-For: ", "remote_addr ", "ip ", "src=", "host "])
    ip = ipv4(rng)
    after = rng.choice(["", "", f":{rng.randint(1024, 65535)}", " (NAT)"])
    return [ctx(before), pii(ip, "IP", "ipv4"), ctx(after)]


def k_ipv6(rng: random.Random) -> Fragment:
    return [ctx(rng.choice(["ip6=", "from ", "client ", ""])), pii(ipv6(rng), "IP", "ipv6")]


def k_secret(rng: random.Random) -> Fragment:
    before, value = secret(rng)
    return [ctx(rng.choice(["key=", "Authorization: ", "token ", ""]) + before), pii(value, "SECRET", "secret")]


def k_ssn(rng: random.Random) -> Fragment:
    value = ssn(rng)
    r = rng.random()
    if r < 0.6:
        return [ctx(rng.choice(["", "", "SSN ", "ssn: "])), pii(value, "SSN", "ssn")]
    label = rng.choice(SSN_LABELS)
    return [ctx(label), pii(value.replace("-", " ") if r < 0.8 else value.replace("-", ""), "SSN", "ssn")]


def k_my_number(rng: random.Random) -> Fragment:
    d = my_number_digits(rng)
    value = rng.choice(
        [d, f"{d[:4]} {d[4:8]} {d[8:]}", f"{d[:4]}-{d[4:8]}-{d[8:]}", fullwidth(f"{d[:4]}-{d[4:8]}-{d[8:]}")]
    )
    return [ctx(rng.choice(MYNUM_LABELS)), pii(value, "MY_NUMBER", "my_number")]


def k_iban(rng: random.Random) -> Fragment:
    return [ctx(rng.choice(IBAN_LABELS)), pii(iban(rng), "IBAN", "iban")]


def k_passport(rng: random.Random) -> Fragment:
    return [ctx(rng.choice(PASSPORT_LABELS)), pii(passport(rng), "PASSPORT", "passport")]


def k_address_jp(rng: random.Random) -> Fragment:
    before = rng.choice(["", "〒" + f"{rng.randint(100, 999)}-{digits(rng, 4)} ", "住所：", "お届け先：", "住所は"])
    after = rng.choice(["", " メゾン桜203", " 渋谷ビル5F", "です", "まで"])
    return [ctx(before), pii(jp_address(rng), "ADDRESS", "address_jp"), ctx(after)]


def k_address_us(rng: random.Random) -> Fragment:
    before = rng.choice(["", "ship to ", "Address: ", "I live at ", "deliver to "])
    after = rng.choice(["", ", Springfield, IL 62704", ", New York, NY 10118", ", Austin TX 78701", ". Thanks"])
    return [ctx(before), pii(us_address(rng), "ADDRESS", "address_us"), ctx(after)]


POSITIVE: dict[str, Callable[[random.Random], Fragment]] = {
    "email": k_email,
    "email_urlenc": k_email_urlenc,
    "phone_jp": k_phone_jp,
    "phone_glued": k_phone_glued,
    "phone_us_sep": k_phone_us_sep,
    "phone_us_bare": k_phone_us_bare,
    "phone_intl": k_phone_intl,
    "phone_intl00": k_phone_intl00,
    "phone_trunk": k_phone_trunk,
    "order": k_order,
    "order_glued": k_order_glued,
    "card": k_card,
    "ipv4": k_ipv4,
    "ipv6": k_ipv6,
    "secret": k_secret,
    "ssn": k_ssn,
    "my_number": k_my_number,
    "iban": k_iban,
    "passport": k_passport,
    "address_jp": k_address_jp,
    "address_us": k_address_us,
}


# --------------------------------------------------------------------------- look-alikes


def n_version4(rng: random.Random) -> Fragment:
    v = ".".join(str(x) for x in (rng.randint(1, 12), rng.randint(0, 9), rng.randint(0, 20), rng.randint(0, 200)))
    label = rng.choice(
        [
            "app_version=",
            "version ",
            "Version: ",
            '"version": "',
            "appVersion=",
            "build ",
            "Build ",
            "ver.",
            "v",
            "os_version=",
            "sdk_version: ",
            "firmware ",
            "バージョン",
            "MangaAssist/",
            "okhttp/",
            "versionName=",
            "fw=",
        ]
    )
    return [ctx(label), neg(v, "neg_version4")]


def n_loopback(rng: random.Random) -> Fragment:
    value = rng.choice(
        [
            "0.0.0.0",
            "127.0.0.1",
            "127.0.0.53",
            "127.0.1.1",
            "::1",
            "::",
            "255.255.255.0",
            "255.255.255.255",
            "224.0.0.251",
        ]
    )
    label = rng.choice(["bind ", "listen ", "host=", "connect to ", "netmask ", "localhost ", "addr=", ""])
    after = rng.choice(["", f":{rng.randint(1024, 65535)}", " (loopback)"])
    if ":" in value and after.startswith(":"):  # an IPv6 address with a port is written in brackets
        return [ctx(label + "["), neg(value, "neg_loopback"), ctx("]" + after)]
    return [ctx(label), neg(value, "neg_loopback"), ctx(after)]


def isbn10(rng: random.Random) -> str:
    body = rng.choice(["4", "4", "1"]) + digits(rng, 8)
    check = (11 - sum((10 - i) * int(ch) for i, ch in enumerate(body)) % 11) % 11
    return body + ("X" if check == 10 else str(check))


def isbn13(rng: random.Random) -> str:
    body = "978" + rng.choice(["4", "1", "0"]) + digits(rng, 8)
    check = (10 - sum(int(ch) * (3 if i % 2 else 1) for i, ch in enumerate(body)) % 10) % 10
    return body + str(check)


def n_10digit(rng: random.Random) -> Fragment:
    a, b, c = nanp(rng)
    shaped = a + b + c  # a number that has a US phone's shape, in a context that is not a phone's
    k = rng.randrange(10)
    if k == 0:
        return [
            ctx(rng.choice(["ts=", "timestamp ", "epoch "])),
            neg(str(rng.randint(1_600_000_000, 1_999_999_999)), "neg_10digit"),
        ]
    if k == 1:
        return [ctx(rng.choice(["ISBN ", "ISBN-10 ", "isbn: "])), neg(isbn10(rng), "neg_10digit")]
    if k == 2:
        return [ctx(rng.choice(["ASIN ", "ASIN: "])), neg(isbn10(rng), "neg_10digit")]
    if k == 3:
        return [ctx(rng.choice(["tracking number ", "DHL tracking ", "追跡番号 "])), neg(shaped, "neg_10digit")]
    if k == 4:
        return [ctx(rng.choice(["customer id ", "user_id=", "account ", "会員番号 "])), neg(shaped, "neg_10digit")]
    if k == 5:
        return [ctx(rng.choice(["invoice ", "ticket #", "ref "])), neg(shaped, "neg_10digit")]
    if k == 6:
        return [ctx(rng.choice(["SKU ", "item ", "JAN "])), neg(shaped, "neg_10digit")]
    if k == 7:
        return [neg(shaped, "neg_10digit"), ctx(rng.choice([" views", " bytes", " points", "件"]))]
    if k == 8:
        return [ctx(rng.choice(["item_id=", "product id ", "SKU "])), neg("0" + digits(rng, 9), "neg_10digit")]
    return [neg(isbn10(rng), "neg_10digit")]


def n_isbn(rng: random.Random) -> Fragment:
    i13 = isbn13(rng)
    return [
        ctx(rng.choice(["ISBN ", "ISBN", "ISBN-13: ", "", "JAN "])),
        neg(rng.choice([i13, f"{i13[:3]}-{i13[3]}-{i13[4:6]}-{i13[6:12]}-{i13[12]}"]), "neg_isbn"),
    ]


def n_asin(rng: random.Random) -> Fragment:
    value = "B0" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(8))
    return [ctx(rng.choice(["ASIN ", "asin=", ""])), neg(value, "neg_asin")]


def n_price(rng: random.Random) -> Fragment:
    return [
        neg(
            rng.choice(
                [
                    f"¥{rng.randint(100, 99999):,}",
                    f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
                    f"US${rng.randint(1000, 9999):,}.00",
                    f"{rng.randint(100, 99999):,}円（税込）",
                    f"€{rng.randint(1, 99)},{rng.randint(0, 99):02d}",
                    f"合計 ¥{rng.randint(1000, 999999):,}",
                    f"Total: ${rng.randint(10, 999)}.{rng.randint(0, 99):02d} ({rng.randint(1, 9)} items)",
                ]
            ),
            "neg_price",
        )
    ]


def n_datetime(rng: random.Random) -> Fragment:
    y, mo, d, h, mi, s = (
        2026,
        rng.randint(1, 12),
        rng.randint(1, 28),
        rng.randint(0, 23),
        rng.randint(0, 59),
        rng.randint(0, 59),
    )
    return [
        neg(
            rng.choice(
                [
                    f"{y}-{mo:02d}-{d:02d}",
                    f"{y}/{mo:02d}/{d:02d} {h:02d}:{mi:02d}",
                    f"{y}年{mo}月{d}日",
                    f"{mo:02d}/{d:02d}/{y}",
                    f"{y}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{rng.randint(0, 999):03d}Z",
                    f"{y}{mo:02d}{d:02d}T{h:02d}{mi:02d}{s:02d}Z",
                    f"{h:02d}:{mi:02d}-{(h + 8) % 24:02d}:{mi:02d}",
                    f"{y}.{mo:02d}.{d:02d}",
                ]
            ),
            "neg_datetime",
        )
    ]


def n_sku(rng: random.Random) -> Fragment:
    return [
        ctx(rng.choice(["SKU ", "SKU-", "品番 ", "型番：", "model ", "item no. ", "part "])),
        neg(
            rng.choice(
                [
                    f"{digits(rng, 4)}-{digits(rng, 4)}-{digits(rng, 2)}",
                    f"MA-{digits(rng, 4)}-JP",
                    f"{digits(rng, 3)}-{digits(rng, 2)}-{digits(rng, 4)}",
                    "0" + digits(rng, 9),
                    f"{digits(rng, 4)} {digits(rng, 4)} {digits(rng, 4)}",
                ]
            ),
            "neg_sku",
        ),
    ]


def n_tracking(rng: random.Random) -> Fragment:
    return [
        ctx(rng.choice(["tracking ", "お問い合わせ伝票番号 ", "追跡番号：", "Tracking #", "伝票番号 ", ""])),
        neg(
            rng.choice(
                [
                    f"{digits(rng, 4)}-{digits(rng, 4)}-{digits(rng, 4)}",
                    digits(rng, 12),
                    "1Z" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(16)),
                    " ".join(["9400", digits(rng, 4), digits(rng, 4), digits(rng, 4), digits(rng, 4), digits(rng, 2)]),
                    f"EJ{digits(rng, 9)}JP",
                    f"{digits(rng, 4)} {digits(rng, 4)} {digits(rng, 4)}",
                ]
            ),
            "neg_tracking",
        ),
    ]


def n_postal(rng: random.Random) -> Fragment:
    code = f"{rng.randint(100, 999)}-{digits(rng, 4)}"
    return [
        neg(
            rng.choice(
                [
                    f"〒{code}",
                    f"郵便番号 {code}",
                    code,
                    f"〒{fullwidth(code)}",
                    f"{rng.randint(10000, 99999)}-{digits(rng, 4)}",
                    f"CA {rng.randint(90000, 96199)}",
                ]
            ),
            "neg_postal",
        )
    ]


def n_counts(rng: random.Random) -> Fragment:
    return [
        neg(
            rng.choice(
                [
                    f"{rng.randint(1_000_000, 99_999_999):,} copies",
                    f"4.{rng.randint(0, 9)}★ ({rng.randint(1000, 99999):,}件)",
                    f"ポイント{rng.randint(100, 9999):,}pt",
                    f"page {rng.randint(1, 300)} of {rng.randint(300, 600)}",
                    f"{rng.randint(1, 99)} x ¥{rng.randint(100, 2000):,}",
                    f"top {rng.randint(5, 50)}",
                    f"{rng.randint(10, 99)}.{rng.randint(0, 9)}%",
                ]
            ),
            "neg_counts",
        )
    ]


def n_ids(rng: random.Random) -> Fragment:
    hx = "0123456789abcdef"
    return [
        neg(
            rng.choice(
                [
                    "".join(rng.choice(hx) for _ in range(32)),
                    "".join(rng.choice(hx) for _ in range(16)),
                    f"req-{rng.randint(1, 9)}-{digits(rng, 6)}",
                    "resp_01" + "".join(rng.choice("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for _ in range(18)),
                    f"sess-{''.join(rng.choice(hx) for _ in range(12))}",
                    "-".join("".join(rng.choice(hx) for _ in range(n)) for n in (8, 4, 4, 4, 12)),
                    f"anthropic.claude-3-5-haiku-2024{rng.randint(1000, 1231)}-v1:0",
                ]
            ),
            "neg_ids",
        )
    ]


def n_ssn_like(rng: random.Random) -> Fragment:
    bad = rng.choice(
        [
            f"000-{rng.randint(10, 99)}-{digits(rng, 4)}",
            f"666-{rng.randint(10, 99)}-{digits(rng, 4)}",
            f"9{digits(rng, 2)}-{rng.randint(10, 99)}-{digits(rng, 4)}",
            f"{rng.randint(100, 899)}-00-{digits(rng, 4)}",
        ]
    )
    r = rng.random()
    if r < 0.5:
        return [neg(bad, "neg_ssn_like")]
    return [ctx(rng.choice(["SKU ", "part ", "model ", "品番 "])), neg(ssn(rng), "neg_ssn_like")]


def n_12digit(rng: random.Random) -> Fragment:
    d = my_number_digits(rng) if rng.random() < 0.5 else digits(rng, 12)  # half pass the My Number check
    value = rng.choice([d, f"{d[:4]} {d[4:8]} {d[8:]}", f"{d[:4]}-{d[4:8]}-{d[8:]}"])
    return [ctx(rng.choice(["", "伝票番号 ", "ref ", "番号 ", "number "])), neg(value, "neg_12digit")]


def n_iban_like(rng: random.Random) -> Fragment:
    cc = rng.choice(sorted(IBAN_FORMATS))
    bban = "".join(rng.choice("0123456789") for _ in IBAN_FORMATS[cc])
    good = iban_check(cc, bban)
    bad = f"{(int(good) + rng.randint(1, 50)) % 97 + 2:02d}"
    if bad == good:
        bad = f"{(int(good) + 1) % 97 + 2:02d}"
    compact = cc + bad + bban
    return [
        neg(
            rng.choice(
                [
                    " ".join(compact[i : i + 4] for i in range(0, len(compact), 4)),
                    compact,
                    f"{cc}{rng.randint(10, 99)} {digits(rng, 4)}",
                    f"RX{rng.randint(10, 99)}-{digits(rng, 3)}",
                ]
            ),
            "neg_iban_like",
        )
    ]


def n_passport_like(rng: random.Random) -> Fragment:
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    value = rng.choice(
        [rng.choice(letters) + rng.choice(letters) + digits(rng, 7), rng.choice(letters) + digits(rng, 8)]
    )
    return [
        ctx(rng.choice(["型番 ", "model ", "item ", "serial ", "SKU ", "", "flight ", "passport cover, item "])),
        neg(value, "neg_passport_like"),
    ]


def n_address_like(rng: random.Random) -> Fragment:
    a, b = rng.randint(1, 5), rng.randint(6, 30)
    return [
        neg(
            rng.choice(
                [
                    f"{rng.choice(PREFS)}限定",
                    f"{rng.choice(PREFS)}内で{a}-{a + 1}日",
                    f"第{a}-{b}巻",
                    f"全{a}-{b}巻セット",
                    f"{rng.choice(MUNIS)}で{a}-{a + 2}日",
                    f"{rng.choice(MUNIS)}の店舗は{a + 9}-{b % 12 + 12}時",
                    f"{rng.choice(PREFS)}フェア {a}-{b}日",
                    f"Vol. {a} Sunset Boulevard",
                    f"Top {b} Park Avenue bakeries",
                    f"Season {a} Abbey Road",
                    f"Chapter {b} Main Street",
                    f"{b} Centimeters per Second",
                    f"{a}-Way Street",
                    f"20th Century Boys Vol. {a}",
                ]
            ),
            "neg_address_like",
        )
    ]


def n_volume(rng: random.Random) -> Fragment:
    a = rng.randint(1, 120)
    return [
        neg(
            rng.choice([f"Vol. {a}", f"第{a}巻", f"第{a * 9}話", f"vol.{a}", f"chapter {a}.5", f"{a}-{a + 4}巻"]),
            "neg_volume",
        )
    ]


NEGATIVE: dict[str, Callable[[random.Random], Fragment]] = {
    "neg_version4": n_version4,
    "neg_loopback": n_loopback,
    "neg_10digit": n_10digit,
    "neg_isbn": n_isbn,
    "neg_asin": n_asin,
    "neg_price": n_price,
    "neg_datetime": n_datetime,
    "neg_sku": n_sku,
    "neg_tracking": n_tracking,
    "neg_postal": n_postal,
    "neg_counts": n_counts,
    "neg_ids": n_ids,
    "neg_ssn_like": n_ssn_like,
    "neg_12digit": n_12digit,
    "neg_iban_like": n_iban_like,
    "neg_passport_like": n_passport_like,
    "neg_address_like": n_address_like,
    "neg_volume": n_volume,
}

# --------------------------------------------------------------------------- carriers and templates

Segments = list[Piece]


@dataclass(frozen=True)
class Templates:
    prose_en: tuple[str, ...]
    prose_ja: tuple[str, ...]
    chat_system: tuple[str, ...]
    tool_names: tuple[str, ...]
    tool_keys: tuple[str, ...]
    headers: tuple[str, ...]
    query_paths: tuple[str, ...]
    query_keys: tuple[str, ...]
    logs: tuple[str, ...]


TUNE = Templates(
    prose_en=(
        "Hi, please reach me via {0} about {1}, thanks.",
        "My details: {0}. Also {1} if it helps.",
        "Customer wrote: I moved, it's {0} now ({1}).",
        "Can you update my profile? {0} / {1}",
        "Retrieved chunk [faq_7]: {1}. Contact: {0}.",
        "{0}",
        "Note from support: {1}; verified {0}.",
    ),
    prose_ja=(
        "お世話になっております。{0}です。{1}の件でご連絡しました。",
        "連絡先は{0}、{1}もご確認ください。",
        "{1}について、{0}までお願いします",
        "お客様情報：{0}（{1}）",
        "{0}",
    ),
    chat_system=("You are MangaAssist, a helpful shopping assistant.", "あなたはMangaAssistです。"),
    tool_names=("update_contact", "lookup_order", "ship_to"),
    tool_keys=("value", "note", "contact", "details"),
    headers=("X-Customer-Contact", "X-Note", "X-User-Info"),
    query_paths=("/api/v1/contact", "/cart/checkout", "/search"),
    query_keys=("q", "contact", "note"),
    logs=(
        "2026-12-03T10:15:30.123Z INFO [chat] user=u-1042 msg={0} extra={1}",
        "WARN tool=update_contact args: {0} | {1}",
        "[{1}] error: could not verify {0}",
    ),
)

HELDOUT = Templates(
    prose_en=(
        "Hello! Quick question about {1}. Best way to get me is {0}",
        "Please send the invoice to {0} and mention {1}.",
        "Agent summary -- customer confirmed {0}; product {1}.",
        "i already gave you {0} twice!! ({1})",
        "{1} -- {0}",
        "Update: {0}",
        "Shipping form: name Zelda Q., {0}, gift message for {1}",
    ),
    prose_ja=(
        "いつもありがとうございます。{1}の在庫について{0}へご連絡いただけますか。",
        "【連絡先】{0}\n【備考】{1}",
        "先日注文した{1}がまだ届きません。{0}",
        "折り返しは{0}にお願いします（{1}）。",
        "{0}　よろしくお願いいたします。",
    ),
    chat_system=("System: answer in the customer's language.", "システム：丁寧に答えてください。"),
    tool_names=("create_ticket", "verify_identity", "register_address", "refund"),
    tool_keys=("customer_input", "memo", "field", "raw"),
    headers=("X-Forwarded-Contact", "X-Debug-Payload", "Referer-Note"),
    query_paths=("/v2/users/lookup", "/account/update", "/ticket/new"),
    query_keys=("input", "memo", "value"),
    logs=(
        "ts=2026-12-03T01:02:03Z level=info svc=orchestrator event=tool_args payload={0} ctx={1}",
        "E1203 10:15:30.123456 worker.py:88] failed to match {0} (also saw {1})",
        "{1} >> {0}",
    ),
)

FRESH = Templates(  # written after the detectors were fixed on the first two parts, run once for the report
    prose_en=(
        "**Contact**: {0}\n- item: {1}",
        "<tr><td>customer</td><td>{0}</td><td>{1}</td></tr>",
        "name,contact,product\nTaro,{0},{1}",
        "> {0}\n> sent from my phone ({1})",
        "Re: your question\n\nSure - {0}. Regarding {1}, it ships Friday.",
        "contact: {0}\nproduct: {1}\n",
        "\t{0}\t{1}",
    ),
    prose_ja=(
        "お問い合わせありがとうございます。\n・連絡先：{0}\n・商品：{1}",
        "<p>{0}</p><p>{1}</p>",
        "「{0}」に変更してください。{1}は不要です。",
        "※{1}\n{0}",
        "【重要】{0}　{1}",
    ),
    chat_system=("You are a polite bookstore assistant.", "丁寧な日本語で答えてください。"),
    tool_names=("send_sms", "save_profile", "escalate"),
    tool_keys=("input_text", "profile_field", "comment", "blob"),
    headers=("X-Client-Contact", "X-Original-Message", "X-Trace-Note"),
    query_paths=("/v3/profile", "/support/form", "/m/checkout"),
    query_keys=("text", "f1", "body"),
    logs=(
        '{"level":"info","msg":"tool args","raw":"{0}","aux":"{1}"}',
        "Dec 03 10:15:30 ip-10-0-3-7 tracegw[123]: probe: {0} / {1}",
        '127.0.0.1 - - [03/Dec/2026:10:15:30 +0900] "GET /q?x={0} HTTP/1.1" 200 512 "{1}"',
    ),
)

CARRIERS = (
    "prose_en",
    "prose_ja",
    "chat_json",
    "chat_json_ascii",
    "tool_value",
    "tool_json",
    "tool_json_ascii",
    "tool_json_double",
    "headers_text",
    "header_value",
    "query_rfc3986",
    "query_form",
    "log_line",
)


def _fill(template: str, slots: list[Fragment]) -> Segments:
    """``template`` with ``{0}``, ``{1}`` replaced by fragments (absent slots by nothing)."""
    out: Segments = []
    last = 0
    for m in re.finditer(r"\{([01])\}", template):
        out.append(ctx(template[last : m.start()]))
        k = int(m.group(1))
        out.extend(slots[k] if k < len(slots) else [])
        last = m.end()
    out.append(ctx(template[last:]))
    return [p for p in out if p[0]]


def _encode(segs: Segments, fn: Callable[[str], str]) -> Segments:
    return [(fn(t), e, k) for t, e, k in segs]


def _json_str(segs: Segments, ascii_only: bool) -> Segments:
    return [ctx('"'), *_encode(segs, lambda t: json.dumps(t, ensure_ascii=ascii_only)[1:-1]), ctx('"')]


def carry(carrier: str, slots: list[Fragment], t: Templates, rng: random.Random) -> Segments:
    ja = any(ord(ch) > 0x3000 for frag in slots for piece in frag for ch in piece[0])
    prose = rng.choice(t.prose_ja if ja or rng.random() < 0.3 else t.prose_en)
    if carrier in ("prose_en", "prose_ja"):
        return _fill(rng.choice(t.prose_ja if carrier == "prose_ja" else t.prose_en), slots)
    if carrier in ("chat_json", "chat_json_ascii"):
        asc = carrier.endswith("ascii")
        system = json.dumps({"role": "system", "content": rng.choice(t.chat_system)}, ensure_ascii=asc)
        return [ctx(f'[{system}, {{"role": "user", "content": '), *_json_str(_fill(prose, slots), asc), ctx("}]")]
    if carrier == "tool_value":
        return _fill(rng.choice(["{0}", "{0} {1}", "{1}: {0}", "{0}"]), slots)
    if carrier in ("tool_json", "tool_json_ascii"):
        asc = carrier.endswith("ascii")
        key, other = rng.sample(list(t.tool_keys), 2)
        body: Segments = [ctx(f'{{"tool": "{rng.choice(t.tool_names)}", "args": {{"{key}": ')]
        body += _json_str(slots[0], asc)
        if len(slots) > 1:
            body += [ctx(f', "{other}": '), *_json_str(slots[1], asc)]
        return [*body, ctx("}}")]
    if carrier == "tool_json_double":
        key = rng.choice(t.tool_keys)
        inner = [ctx(f'{{"{key}": '), *_json_str(_fill(prose, slots), True), ctx("}")]
        return [
            ctx(f'{{"type": "function", "name": "{rng.choice(t.tool_names)}", "arguments": '),
            *_json_str(inner, True),
            ctx("}"),
        ]
    if carrier == "headers_text":
        lines: Segments = [ctx("POST /v1/chat HTTP/1.1\r\nHost: api.example.com\r\n")]
        for i, frag in enumerate(slots):
            lines += [ctx(f"{t.headers[i % len(t.headers)]}: "), *frag, ctx("\r\n")]
        return [*lines, ctx("Accept: application/json\r\n")]
    if carrier == "header_value":
        return list(slots[0])
    if carrier in ("query_rfc3986", "query_form"):
        quote = urllib.parse.quote if carrier == "query_rfc3986" else urllib.parse.quote_plus
        q: Segments = [ctx(f"GET {rng.choice(t.query_paths)}?lang=ja")]
        for i, frag in enumerate(slots):
            enc = []
            for text, ent, kind in frag:  # the value is URL-encoded; "%" of an encoded e-mail stays as it is
                enc.append((text if kind == "email_urlenc" else quote(text, safe=""), ent, kind))
            q += [ctx(f"&{t.query_keys[i % len(t.query_keys)]}="), *enc]
        return [*q, ctx(" HTTP/1.1")]
    if carrier == "log_line":
        return _fill(rng.choice(t.logs), slots)
    raise ValueError(carrier)


def assemble(segs: Segments, carrier: str) -> Record:
    text_parts: list[str] = []
    gold: list[tuple[int, int, str, str]] = []
    negs: list[tuple[int, int, str]] = []
    pos = 0
    for text, entity, kind in segs:
        if entity is not None:
            gold.append((pos, pos + len(text), entity, kind))
        elif kind:
            negs.append((pos, pos + len(text), kind))
        text_parts.append(text)
        pos += len(text)
    return Record("".join(text_parts), tuple(gold), tuple(negs), carrier)


SPLITS = {"tune": (11, TUNE), "heldout": (29, HELDOUT), "fresh": (47, FRESH)}


def build(split: str = "heldout", rounds: int = 4) -> list[Record]:
    """Every positive kind in every carrier ``rounds`` times (beside a look-alike or a second
    value), and every look-alike kind in every carrier ``rounds`` times, beside another look-alike."""
    seed, templates = SPLITS[split]
    rng = random.Random(seed)
    out: list[Record] = []
    positives = list(POSITIVE.items())
    negatives = list(NEGATIVE.items())
    for _round in range(rounds):
        for carrier in CARRIERS:
            for name, gen in positives:
                first = gen(rng)
                if name == "email_urlenc" and not carrier.startswith("query") and rng.random() < 0.5:
                    first = [ctx("https://shop.example.jp/login?"), *first]
                second = rng.choice(negatives)[1](rng) if rng.random() < 0.7 else rng.choice(positives)[1](rng)
                out.append(assemble(carry(carrier, [first, second], templates, rng), carrier))
            for _name, gen in negatives:
                out.append(assemble(carry(carrier, [gen(rng), rng.choice(negatives)[1](rng)], templates, rng), carrier))
    return out
