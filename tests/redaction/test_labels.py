"""The look-alike rules the detectors keep while being fast: a number right after a product-code
label is no card or phone, a 17-digit number is an order id only after an order label, a dotted
quad after a version label is no IP, and the Luhn check is the textbook one. Every spelling of
every label is listed, because a cheap test on the label's last character runs before the label
pattern and must never turn a real label away."""

from __future__ import annotations

import random

import pytest

from gateway.process import pii
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


# --- issue 18: glued labels, version labels, ids and phone words around bare numbers, the labels
# of the national ids, address prefixes. Each list is every word of its regex, because each has a
# cheap last-character test in front of it.


def spans(text: str) -> list[tuple[str, str]]:
    return [(text[m.start : m.end], m.entity) for m in find_pii(text)]


GLUED_PHONE = [
    "tel",
    "TEL",
    "Tel",
    "fax",
    "FAX",
    "phone",
    "Phone",
    "mobile",
    "MOBILE",
    "cell",
    "Cell",
    "mob",
    "number",
    "no",
    "No",
    "TEL/FAX",
    "tel_no",
    "phone-number",
    "ＴＥＬ",
]


@pytest.mark.parametrize("label", GLUED_PHONE)
def test_a_label_glued_to_a_phone_number_is_no_word(label: str) -> None:
    assert spans(f"{label}0312345678 x") == [("0312345678", PHONE)]
    assert spans(f"{label}090-1234-5678") == [("090-1234-5678", PHONE)]
    assert spans(f"{label}+81-75-480-2200") == [("+81-75-480-2200", PHONE)]


@pytest.mark.parametrize(
    "label", ["order", "Order", "ORDER", "orderid", "OrderID", "order_id", "OrderNo", "ordernumber"]
)
def test_a_label_glued_to_an_order_id_is_no_word(label: str) -> None:
    assert spans(f"{label}113-1234567-1234567") == [("113-1234567-1234567", ORDER_ID)]


@pytest.mark.parametrize("word", ["hotel", "abc", "sess", "x", "B0C", "ISBN", "model"])
def test_other_words_glued_to_digits_keep_them_inside_the_word(word: str) -> None:
    assert entities(f"{word}0312345678") == []


def test_id_glued_to_bare_digits_is_an_id_but_glued_to_an_order_id_a_label() -> None:
    assert entities("id0312345678") == []
    assert entities("id113-1234567-1234567") == [ORDER_ID]


MORE_VERSION_LABELS = [
    "app_version=",
    "version: ",
    '"version": "',
    "appVersion=",
    "versionName=",
    "version_code=",
    "build=",
    "Build ",
    "fw=",
    "FW ",
    "sdk_version: ",
    "sdk ",
    "firmware ",
    "rev ",
    "revision ",
    "release ",
    "v=",
    "V ",
    "os_ver=",
]


@pytest.mark.parametrize("label", MORE_VERSION_LABELS)
def test_a_four_part_version_after_a_version_label_is_no_ip(label: str) -> None:
    assert entities(f"{label}10.0.3.2 x") == []


def test_a_user_agent_version_is_no_ip_but_a_url_host_is() -> None:
    assert entities("User-Agent: MangaAssist/10.0.3.2 (iOS 17.1)") == []
    assert entities("okhttp/10.2.3.4") == []
    assert spans("GET http://10.0.3.2/health") == [("10.0.3.2", IP)]
    assert spans("see /hosts/10.0.3.2 now") == [("10.0.3.2", IP)]
    assert spans("dev=10.0.3.2") == [("10.0.3.2", IP)]  # "v" is a label only as a word of its own


@pytest.mark.parametrize(
    "value", ["0.0.0.0", "127.0.0.1", "127.1.2.3", "0.1.2.3", "224.0.0.251", "255.255.255.0", "::1", "::"]
)
def test_addresses_that_are_nobodys_are_no_ip(value: str) -> None:
    assert entities(f"listen {value} x") == []
    assert entities(f"listen [{value}]:8080") == [] if ":" in value else entities(f"listen {value}:8080") == []


MORE_CODE_LABELS = [
    "SKU",
    "SKU-",
    "sku:",
    "model",
    "Model No.",
    "part",
    "part no.",
    "serial",
    "品番",
    "型番：",
    "item no.",
    "item #",
    "商品コード",
    "商品番号",
]


@pytest.mark.parametrize("label", MORE_CODE_LABELS)
def test_more_product_code_labels(label: str) -> None:
    assert entities(f"{label} 0312345678 x") == []
    assert entities(f"{label} 123-45-6789 x") == []


def test_a_phone_written_as_only_a_phone_is_written_survives_a_product_label() -> None:
    assert spans("item: +81 50-1234-5678") == [("+81 50-1234-5678", PHONE)]
    assert spans("SKU (03) 1234-5678") == [("(03) 1234-5678", PHONE)]


ID_WORDS = sorted(pii._ID_WORDS)  # every id label the detector knows, each checked below
ID_LABELS = (
    ID_WORDS
    + [w.upper() for w in ID_WORDS[:6]]
    + ["tracking number", "order no.", "user_id=", "item_id:", "ticket #", "customer id", "account nr", "sku code"]
    + [
        "追跡番号",
        "伝票番号",
        "会員番号",
        "注文番号",
        "商品番号",
        "管理番号",
        "受付番号",
        "問い合わせ番号",
        "問合せ番号",
        "品番",
        "型番",
        "会員番号は",
    ]
)


@pytest.mark.parametrize("label", ID_LABELS)
def test_an_id_label_makes_ten_bare_digits_no_phone_even_beside_a_phone_word(label: str) -> None:
    assert entities(f"call me about {label} 4155550132") == []
    assert entities(f"{label} 0312345678") == []  # nor a bare Japanese one


PHONE_WORDS = sorted(pii._PHONE_WORDS)  # every phone word the detector knows, each checked below
PHONE_PHRASES = (
    PHONE_WORDS
    + [w.upper() for w in PHONE_WORDS[:6]]
    + ["reach me on", "contact me at", "contact number", "my number is", "new number", "the number is"]
    + ['"phone": "', "customerPhone=", "contact_phone:", "mobileTel ", "電話", "携帯：", "連絡先は", "+1", "(+1)"]
)


@pytest.mark.parametrize("phrase", PHONE_PHRASES)
def test_a_phone_word_makes_ten_bare_digits_a_phone(phrase: str) -> None:
    value = "+1 4155550132" if phrase == "+1" else "4155550132"  # "+1 " is the number's own country code
    assert spans(f"{phrase} 4155550132 x") == [(value, PHONE)]


@pytest.mark.parametrize(
    "after", [" (cell)", " (Mobile)", " is my phone", " is the number", " - call", "に電話", "まで連絡", "（携帯）"]
)
def test_a_phrase_after_ten_bare_digits_makes_them_a_phone(after: str) -> None:
    assert spans(f"x 4155550132{after}") == [("4155550132", PHONE)]


def test_ten_bare_digits_alone_are_no_phone() -> None:
    assert entities("4155550132") == []
    assert entities("views 4155550132, likes 12") == []
    assert entities("call me at 090-1234-5678 about 4088834151") == [PHONE]  # the word belongs to the first number


@pytest.mark.parametrize("label", ["SSN", "ssn", "Social Security", "social security number", "社会保障番号"])
def test_an_ssn_label_makes_spaced_and_bare_nine_digits_an_ssn(label: str) -> None:
    assert entities(f"{label} 123 45 6789") == ["SSN"]
    assert entities(f"{label}: 123456789") == ["SSN"]
    assert entities("123 45 6789") == [] and entities("123456789") == []


@pytest.mark.parametrize(
    "label",
    [
        "マイナンバー",
        "マイナンバー：",
        "個人番号",
        "個人番号は",
        "my number",
        "My Number:",
        "mynumber=",
        "my_number",
        "MY-NUMBER",
    ],
)
def test_a_my_number_label_makes_twelve_digits_with_a_valid_check_a_my_number(label: str) -> None:
    assert entities(f"{label} 1234 5678 9018") == ["MY_NUMBER"]
    assert entities(f"{label}１２３４－５６７８－９０１８") == ["MY_NUMBER"]
    assert entities(f"{label} 1234 5678 9012") == []  # wrong check digit
    assert entities("1234 5678 9018") == []  # no label


@pytest.mark.parametrize(
    "label",
    [
        "passport ",
        "Passport No. ",
        "PASSPORT#",
        "passport number is ",
        '"passport_no": "',
        "パスポート番号 ",
        "パスポート番号は",
        "旅券番号：",
        "パスポート：",
    ],
)
def test_a_passport_label_makes_a_document_number_a_passport_number(label: str) -> None:
    for value in ("TK1234567", "X12345678", "123456789", "A1234567"):
        assert spans(f"{label}{value}") == [(value, "PASSPORT")], (label, value)
    assert entities(f"{label}B08N5WRWNW") == []


def test_a_passport_label_does_not_reach_over_other_words() -> None:
    assert entities("passport cover, item AB1234567") == []
    assert entities("型番 TK1234567") == []


@pytest.mark.parametrize(
    "label",
    [
        "住所",
        "現住所：",
        "送付先",
        "配送先",
        "お届け先",
        "届け先",
        "宛先",
        "所在地",
        "自宅",
        "実家",
        "勤務先",
        "送り先",
        "〒150-0001 ",
    ],
)
def test_a_label_before_a_japanese_address_is_not_part_of_it(label: str) -> None:
    assert spans(f"{label}渋谷区神宮前1-2-3") == [("渋谷区神宮前1-2-3", "ADDRESS")]
    assert spans(f"{label}東京都渋谷区神宮前1丁目2番3号") == [("東京都渋谷区神宮前1丁目2番3号", "ADDRESS")]


@pytest.mark.parametrize("city", ["さいたま市大宮区", "つくば市", "いわき市", "ひたちなか市", "埼玉県さいたま市大宮区"])
def test_cities_written_in_hiragana(city: str) -> None:
    assert spans(f"住所は{city}桜木町1-7-5です") == [(f"{city}桜木町1-7-5", "ADDRESS")]


@pytest.mark.parametrize(
    "text",
    ["東京都内で1-2日", "渋谷区で2-3日", "品川区2-3日", "渋谷区の店舗は10-20時", "第1-3巻", "大阪府限定", "区1-2-3"],
)
def test_japanese_look_alikes_of_addresses(text: str) -> None:
    assert entities(text) == []


@pytest.mark.parametrize(
    "word",
    [
        "Vol.",
        "vol",
        "Volume",
        "Chapter",
        "Ch.",
        "Book",
        "No.",
        "Season",
        "Episode",
        "Ep",
        "Part",
        "Top",
        "Page",
        "p.",
        "Issue",
        "Level",
        "Route",
    ],
)
def test_a_count_word_makes_a_number_before_a_street_word_no_house_number(word: str) -> None:
    assert entities(f"{word} 3 Sunset Boulevard") == []
    assert spans("I live at 3 Sunset Boulevard") == [("3 Sunset Boulevard", "ADDRESS")]


@pytest.mark.parametrize("sep", [" ", ", ", " / ", "\n"])
def test_bare_numbers_side_by_side_are_each_found(sep: str) -> None:
    text = f"call 4155550132{sep}0312345678{sep}09012345678"
    assert spans(text) == [("4155550132", PHONE), ("0312345678", PHONE), ("09012345678", PHONE)]
    assert entities(f"call 0312345678{sep}4155550132") == [PHONE]  # the word is the first number's
    assert spans(f"card 4111111111111111{sep}5555555555554444") == [
        ("4111111111111111", CARD),
        ("5555555555554444", CARD),
    ]
    assert entities("0312345678-1 and 0312345678.5") == []


def test_a_version_word_must_be_a_word_or_a_part_of_one() -> None:
    assert spans("server 10.0.0.5 refused") == [("10.0.0.5", IP)]  # "ver" ends "server" (the old regex vetoed it)
    assert spans("driver=10.0.0.5") == [("10.0.0.5", IP)]
    assert entities("sdkVersion=10.0.3.2") == entities("os-ver 10.0.3.2") == entities("VERSION_NAME: 10.0.3.2") == []


def test_compound_and_weak_labels() -> None:
    assert entities("call about order-id 4155550132") == []
    assert entities("item 03-1234-5678") == [PHONE]  # "item" names a product code only with "#", "no.", "code"
    assert entities("item code 03-1234-5678") == entities("item #03-1234-5678") == []
    assert entities("item 0312345678") == []  # but a bare number after it is the item's id
