"""The look-alike rules the detectors keep while being fast: a number right after a product-code
label is no card or phone, a 17-digit number is an order id only after an order label, a dotted
quad after a version label is no IP, and the Luhn check is the textbook one. Every spelling of
every label is listed, because a cheap test on the label's last character runs before the label
pattern and must never turn a real label away."""

from __future__ import annotations

import random

import pytest

from gateway.process.pii import CARD, IP, ORDER_ID, PHONE, find_pii, luhn_ok

CODE_LABELS = [
    "ISBN",
    "isbn",
    "ISBN-10",
    "ISBN-13",
    "JAN",
    "EAN",
    "EAN-13",
    "GTIN",
    "ASIN",
    "UPC",
    "ISSN",
    "JAN code",
    "JANコード",
    "ISBN:",
    "ISBN：",
    "ISBN #",
    "ASIN:\u00a0",
    "Isbn\u3000",
]
ORDER_LABELS = [
    "Order",
    "order #",
    "Order ID:",
    "order no.",
    "Order No",
    "order number",
    "注文",
    "注文番号",
    "注文番号：",
    "ORDER#",
]
VERSION_LABELS = ["version", "Version:", "ver.", "Ver", "バージョン", "build", "Build：", "firmware"]


def entities(text: str) -> list[str]:
    return [m.entity for m in find_pii(text)]


def test_the_unlabeled_numbers_are_found() -> None:
    assert entities("paid 4111 1111 1111 1111 x") == [CARD]
    assert entities("tel 0312345678 x") == [PHONE]
    assert entities("ref 12345678901234567 x") == []
    assert entities("host 10.0.0.1 x") == [IP]


@pytest.mark.parametrize("label", CODE_LABELS)
def test_a_product_code_label_makes_a_number_no_card_or_phone(label: str) -> None:
    assert entities(f"{label} 4111 1111 1111 1111 x") == []
    assert entities(f"{label} 0312345678 x") == []


@pytest.mark.parametrize("label", ORDER_LABELS)
def test_an_order_label_makes_17_digits_an_order_id(label: str) -> None:
    assert entities(f"{label} 12345678901234567 x") == [ORDER_ID]


@pytest.mark.parametrize("label", VERSION_LABELS)
def test_a_version_label_makes_a_dotted_quad_no_ip(label: str) -> None:
    assert entities(f"{label} 10.0.0.1 x") == []


def textbook_luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_luhn_is_the_textbook_check() -> None:
    rng = random.Random(4)
    numbers = ["".join(rng.choice("0123456789") for _ in range(rng.randint(12, 19))) for _ in range(5000)]
    assert any(textbook_luhn(n) for n in numbers) and not all(textbook_luhn(n) for n in numbers)
    assert [luhn_ok(n) for n in numbers] == [textbook_luhn(n) for n in numbers]
