"""PII detection in free text: where the e-mails, phones, order ids, cards, IPs, secrets, national
ids, IBANs and street addresses are.

``find_pii(text)`` returns non-overlapping ``Match(start, end, entity, canonical)`` in order.
Offsets index the ORIGINAL string. Two views of it are matched:

- escapes decoded: when the text holds JSON escapes (``\\u306f``, ``\\n``, ``\\"``, also escaped
  twice) or URL escapes (``%40``, ``%2540``, UTF-8 runs such as ``%E9%9B%BB``; ``+`` is a space
  inside a query string), matching runs on the decoded text and each match is mapped back to the
  original offsets, widened to whole escapes: ``\\u306f090-6574-8118`` gives the phone its own
  boundary, ``name%40live.jp`` is an e-mail, and a replacement never leaves half an escape behind;
- then a copy normalised by a one-to-one ``str.translate`` table (full-width ASCII → ASCII,
  ideographic space → space, the dash variants people type → ``-``), which keeps every character
  at its index.

Design, for speed (DESIGN §8: ≤ 50 µs per 500-character text, and most strings are short ids):

- one combined regex for everything that starts with a digit, ``+`` or ``(`` (phones, order
  ids, cards, IPv4, SSNs, My Numbers, IBANs, US house numbers), whose branches are tried at
  digit positions only; a number glued to a label (``TEL0626347047``, ``order113-…``) starts
  there too (see the comment above ``_DIGITS`` for what each step saves);
- separate scans only when a cheap ``in`` test says they can match (a rare character of a word,
  found in C ~10x faster than the word, is looked for first): ``@`` for e-mail, ``::`` or
  hex-colon runs for IPv6, ``ASIA``, ``earer``, ``ecret``, ``AKIA`` or ``ECRET`` (with a ``K``),
  ``eyJ`` (with a ``J``) for secrets, ``assport``, ``ASSPORT`` (with a ``P``), ``パスポ`` (with a
  ``ポ``) or ``旅券`` (with a ``券``) for passport numbers, a municipality character (市区町村郡) for
  Japanese addresses (whose block numbers are then looked for just after it), ``\\``, ``%`` or
  ``+`` with ``=`` for escapes to decode (found with ``str.find``);
- candidates are then checked in Python: Luhn for cards, mod 97 for IBANs, the check digit of a
  My Number, digit counts and prefixes for phones, octet ranges for IPv4 (loopback, ``0.x``,
  multicast and netmasks are not personal), ``ipaddress`` for IPv6, and the words around a
  number: product codes (``ISBN``, ``SKU``, ``品番`` …) and ids (``tracking``, ``user_id`` …) are
  no phones, four dotted numbers after ``version``/``build``/``Name/`` are no IP, ten bare digits
  are a US phone only beside a phone word (``call``, ``cell``, ``"phone": "``, ``電話``, ``+1``),
  a My Number only after its label, a spaced or unseparated SSN only after ``SSN``;
- per candidate, Python does little: labels are looked up as words in sets (two C-level
  ``rstrip`` calls find the word; a two-character test before that turns most words away), and
  Luhn, the My Number check and the e-mail's local part use C-level string methods.

Every scan is linear in the text (``tests/redaction/test_kinds.py`` times adversarial inputs: one
long token with "+", digit runs, thousands of escapes).

Not detected (README, "Sampling, the trace contract and redaction"): personal names, addresses
in romaji or without block numbers, lowercase US street names, kanji numerals.

``phonenumbers`` was measured and not used: its matcher costs ~1.5 ms per 500-character text
and ``parse`` + ``is_valid_number`` ~70 µs per candidate here, both far over the budget.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_left
from collections.abc import Iterator
from itertools import pairwise
from operator import attrgetter, mul
from typing import NamedTuple

EMAIL, PHONE, ORDER_ID, CARD, IP, SECRET = "EMAIL", "PHONE", "ORDER_ID", "CARD", "IP", "SECRET"
SSN, MY_NUMBER, IBAN, PASSPORT, ADDRESS = "SSN", "MY_NUMBER", "IBAN", "PASSPORT", "ADDRESS"
ENTITIES = (EMAIL, PHONE, ORDER_ID, CARD, IP, SECRET, SSN, MY_NUMBER, IBAN, PASSPORT, ADDRESS)

# Shortest text that can hold any entity ("a@b.jp" has 6 characters; a phone has ≥ 10 digits).
MIN_LEN = 6


class Match(NamedTuple):
    start: int
    end: int
    entity: str
    canonical: str  # normalised value (separators stripped, lowercased e-mail) for pseudonyms


_FOLD = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}  # full-width ASCII block
_FOLD[0x3000] = 0x20  # ideographic space
for _dash in (0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2015, 0x2212, 0x30FC, 0xFF70):
    _FOLD[_dash] = 0x2D  # hyphens, dashes, minus, and the long-vowel mark people type as a dash
# str.translate over a whole Japanese text costs ~0.05 µs per character; fold only what is there.
# A class of one range is scanned ~2x faster than one of several (a bitmap per character block),
# so the scan stops at the block U+FF0B-U+FF5A and the look-behind checks the character there.
_FULLWIDTH_ALNUM = re.compile("[\uff0b-\uff5a](?<=[\uff0b\uff10-\uff19\uff20-\uff3a\uff41-\uff5a])")
# Folding, by what a class of one range finds fast: the full-width block's runs, then the nine
# characters outside it, each looked for with ``in`` first (see ``_for_matching``). Written
# "[x][x]*", not "[x]+": only a pattern that starts with a plain character class lets the regex
# engine skip in C to the next candidate.
_FULLWIDTH_RUN = re.compile("[\uff01-\uff5e][\uff01-\uff5e]*")
_FOLD_OUTSIDE = tuple((chr(c), chr(_FOLD[c])) for c in _FOLD if not 0xFF01 <= c <= 0xFF5E and c != 0x30FC)
# The long-vowel mark is a dash except after katakana (マイナンバー); written with the mark first, a
# literal the engine finds fast, and the katakana check behind it.
_LONG_VOWEL_DASH = re.compile("\u30fc(?<![\u30a1-\u30fa]\u30fc)")

_W = "0-9A-Za-z_"  # ASCII word characters: Japanese text around a number counts as a boundary
_E = rf"(?![{_W}])"
_S = "[ .\\-\u2010-\u2015\u2212\u30fc\uff0d\uff70\u3000]"  # one separator people type between digit groups
_D = "[\\-\u2010-\u2015\u2212\u30fc\uff0d\uff70の]"  # between the block numbers of a Japanese address
_O = "[(\uff08]"  # opening and closing parentheses, ASCII or full-width
_C = "[)\uff09]"
_END = rf"(?![{_W}]|[.\-][0-9])"  # no more digits glued on ("2026-03-24.1" is no phone)
_CJK = "\u3005\u3040-\u30ff\u4e00-\u9fff"  # 々, kana, kanji


def _ci(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


# The characters an entity of the digit scan can start with, and the ones that must follow it.
_FIRST = r"[0-9+(D\uff08]"
_RUN = r"[0-9 .\-()+\u2010-\u2015\u2212\u30fc\uff0d\uff70\u3000\uff08\uff09]"
# What ends a number that can start nothing (see _DIGITS): after at most four more digits, a
# character that is no digit, separator, parenthesis or capital, or a space and a lowercase letter.
_DEAD_END = rf"[0-9]{{0,4}}+(?:[^{_RUN[1:-1]}A-Z]|\ [a-z])"

# A number normally starts where no ASCII word character precedes it; these labels may be glued
# to it (TEL0626347047, FAX0877-54-2664, order113-1234567-1234567). A glued number is a long one, so
# the look-ahead comes first: the digits of hashes and ids (a letter, a digit, a letter) leave there.
_GLUED_LABELS = ("tel", "fax", "phone", "mobile", "cell", "mob", "order", "id", "no", "number")
# The words a glued label may be: a label, or a label and its suffix ("orderid", "tel_no"); "_" and
# "-" are dropped before the lookup.
_GLUED_WORDS = frozenset(
    ["id", "no", "number", "order", "orderid", "orderno", "ordernumber"]
    + [w + suffix for w in ("tel", "fax", "phone", "mobile", "cell", "mob") for suffix in ("", "no", "number")]
)
_GLUE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-"
_GLUED = "(?:" + "|".join(f"(?<={_ci(w)}.)" for w in _GLUED_LABELS) + ")"

_STREET = (
    "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|Way|Court|Ct|Place|Pl|Terrace|Ter"
    "|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Plaza|Plz|Alley|Crescent|Loop|Pike"
)
_DIRECTION = "N|S|E|W|NE|NW|SE|SW|North|South|East|West"

# One pass over the text. The pattern starts with a character class, so the regex engine
# skips in C to the characters that can start an entity (a digit, "+", "(" or the "D" of a
# digital order id) and tries the branches only there. Each branch therefore describes its
# entity WITHOUT the first character, which it checks with a look-behind. Every step is there
# for speed (bench/redaction.py; each costs at every digit of every text):
# - a digit after a digit leaves at once (most digits: nothing starts inside a number);
# - so does a number that ends within five characters in a character that is no digit,
#   separator, parenthesis or capital, or in a space and a lowercase letter ("f3a" in a hex id,
#   "7x10", "1,980", "2026年", "12 volumes"): every branch fails there, the numbers' look-ahead
#   below (six digits or separators), the house number (a capital or digit after its space) and
#   the IBAN (its second check digit and four digits or capitals);
# - the start is decided once (an atomic group): after no word character, after a glued label
#   (only where a long number follows), or the check digits of an IBAN two letters on, which
#   the conditional sends straight to the IBAN branch (the look-behinds of these two need
#   letters before the number, so after "_" both fail);
# - the look-ahead drops short numbers ("12 volumes", "¥528") before the number branches are
#   tried (each has at least six more digits or separators after its first character); a short
#   one can only be a house number, tried last, behind the first letters of the street words;
# - among the numbers, a bare run of digits is one possessive branch (classified by its length
#   in Python; tried behind a look-ahead for its eight digits); a longer bare run, an ISO date or
#   a hyphenated ISBN-13 leaves after it (no number branch matches at their start: an ISBN's
#   first group is too short for an order id, and after its second come "-" and digits, which
#   end neither an SSN nor a US phone); the rest dispatch on the first character ("0", "1-9",
#   "+", "(").
# At one position the first matching branch wins. Japanese addresses have a scan of their own.
_DIGITS = re.compile(
    rf"""
    {_FIRST}(?<![0-9].)(?!{_DEAD_END})
    (?>(?<![{_W}].)
      |(?:(?<=[A-Z][A-Z][0-9])(?<![{_W}][A-Z][A-Z].)(?P<ib>)|(?={_RUN}{{6}}){_GLUED}))
    (?(ib)(?P<iban>[0-9](?:\ ?[0-9A-Z]{{4}}){{2,8}}(?:\ ?[0-9A-Z]{{1,3}})?)
    |(?:(?={_RUN}{{6}})
        (?:
          (?P<bare>(?=[0-9]{{8}})(?:(?<=0)[0-9]{{8,15}}+|(?<=[1-9])(?:[0-9]{{8,11}}+|[0-9]{{14,16}}+|[0-9]{{18}}+)){_E})
        | (?!(?<=[0-9])(?:[0-9]{{7}}|[0-9]{{3}}[\-/.][01][0-9][\-/.][0-3][0-9](?![0-9])  # long bare run, date,
              |7[89]-(?<=97[89]-)[0-9]{{1,5}}-[0-9]{{1,7}}-[0-9]{{1,6}}-[0-9]))  # hyphenated ISBN-13
          (?:
          (?=[0-9]{{2}}[\- ])  # both: two digits, then "-" or a space
          (?:(?P<order>(?<=[0-9D])[0-9]{{2}}-[0-9]{{7}}-[0-9]{{7}}{_E})
          | (?P<ssn>(?<=[0-9])[0-9]{{2}}(?P<ss>[\- ])[0-9]{{2}}(?P=ss)[0-9]{{4}}{_E}(?!{_S}[0-9])))
        | (?<=0)
          (?:(?P<intl00>(?:0{_S}?|10{_S})[1-9][0-9]{{0,2}}+(?:{_S}?{_O}?[0-9]{{1,5}}+{_C}?){{1,7}}{_END})
          | (?P<mynum0>[0-9]{{3}}(?P<ms0>[\- ])[0-9]{{4}}(?P=ms0)[0-9]{{4}}{_E}(?!{_S}[0-9]))
          | (?P<jp>(?<![+\-].)
              (?:[0-9]{{1,4}}{_S}[0-9]{{1,4}}{_S}[0-9]{{3,4}}|[0-9]{{1,4}}{_O}[0-9]{{1,4}}{_C}[0-9]{{3,4}})
              {_END}))
        | (?<=[1-9])
          (?:(?=[0-9]{{3}}[ \-])  # both: three digits, then a space or "-"
            (?:(?P<card>(?<=[2-6])[0-9]{{3}}(?P<cs>[ \-])[0-9]{{4}}(?P=cs)[0-9]{{4}}(?P=cs)[0-9]{{4}}
                       (?:(?P=cs)?[0-9]{{3}})?{_E}(?!(?P=cs)[0-9]{{4}})
                     |(?<=3)[47][0-9]{{2}}(?P<as>[ \-])[0-9]{{6}}(?P=as)[0-9]{{5}}{_E})
            | (?P<mynum>[0-9]{{3}}(?P<ms>[\- ])[0-9]{{4}}(?P=ms)[0-9]{{4}}{_E}(?!{_S}[0-9])))
          | (?P<us>(?<![+\-].)
              (?:(?<=1){_S}(?:{_O}[2-9][0-9]{{2}}{_C}\ ?|[2-9][0-9]{{2}}{_S})|(?<=[2-9])[0-9]{{2}}{_S})
              [2-9][0-9]{{2}}{_S}[0-9]{{4}}{_END})
          | (?P<ipv4>(?<![.].)[0-9]{{0,2}}\.(?:[0-9]{{1,3}}\.){{2}}[0-9]{{1,3}}(?![{_W}]|\.[0-9])))
        | (?<=\+)(?P<intl>[1-9][0-9]{{0,2}}+(?:{_S}?{_O}?[0-9]{{1,5}}+{_C}?){{1,7}}{_END})
        | (?<=[(\uff08])(?<![+\-].)
          (?:(?P<jpp>0[0-9]{{1,4}}{_C}\ ?[0-9]{{1,4}}{_S}?[0-9]{{3,4}}{_END})
          | (?P<usp>[2-9][0-9]{{2}}{_C}\ ?[2-9][0-9]{{2}}{_S}?[0-9]{{4}}{_END}))
          )
        )
      | (?P<usaddr>(?<=[1-9])[0-9]{{0,5}}+[A-Z]?+\ (?=[A-Z0-9])(?:(?:{_DIRECTION})\.?\ )?
          (?:(?:[A-Z][a-z]+|[0-9]{{1,3}}(?:st|nd|rd|th))\ ){{1,4}}(?=[ABCDHLPRSTW])(?:{_STREET})(?![A-Za-z0-9])
          (?:\ (?:N|S|E|W|NE|NW|SE|SW)(?![A-Za-z0-9]))?
          (?:,?\ (?:Apt|Apartment|Suite|Ste|Unit|Fl|Floor|Rm|Room)\.?\ ?\#?[0-9A-Z]{{1,5}}(?![A-Za-z0-9])
            |\ \#[0-9A-Z]{{1,5}}(?![A-Za-z0-9]))?)
      ))
    """,
    re.VERBOSE,
)
_KIND = {"mynum0": "mynum", "jpp": "jp", "usp": "us"}
_PHONE_KINDS = frozenset(("jp", "us", "intl", "intl00"))  # us10 and bare intl00/jp come through "bare"
# The block numbers of a Japanese address (1-2-3, 1丁目2番3号, 123番地), after kana or a kanji: a scan
# of its own, run only on text with a municipality character (市区町村郡), which an address needs.
_JP_ADDRESS = re.compile(
    rf"""[0-9](?<=[{_CJK}][0-9])[0-9]{{0,3}}+
    (?:(?:丁目|番地?|{_D})[0-9]{{1,4}}(?:(?:番地?|号|{_D})[0-9]{{1,4}}号?)?(?:{_D}[0-9]{{1,4}})?|番地)
    (?![0-9]|[日巻話月年冊個円歳時分秒人点枚位回章件%〜~]|{_D}[0-9])""",
    re.VERBOSE,
)  # branches written twice, one per first character
_ORDER_LABEL = re.compile(r"(?:order|注文)\s*(?:id|no\.?|number|番号)?\s*[#:：]?\s*$", re.IGNORECASE)
_EMAIL_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])"
)
_EMAIL_LOCAL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-"
_IPV6_GATE = re.compile(r":[0-9A-Fa-f]{0,4}:")  # starts with a literal: found in C
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_WORD = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
# AKIA/ASIA access key ids, bearer tokens, AWS secret keys after their key name, and JWTs. The
# pattern starts with the class of their first letters, which the engine skips to in C (a pattern
# starting with a look-behind is tried at every position: ~20 µs over 500 characters, now ~3 µs);
# each alternative then starts with the rest of its literal, which the engine rules out in one
# comparison, and checks its first letter (and the boundary before it) behind it.
_SECRETS = re.compile(
    r"[ABSabe]"
    r"(?:[KS]IA(?<=A[KS]IA)(?<![0-9A-Za-z]A[KS]IA)[0-9A-Z]{16}(?![0-9A-Za-z])"
    r"|earer(?<=[Bb]earer)\s+(?P<tok>(?=[A-Za-z0-9\-._~+/]*[0-9])[A-Za-z0-9\-._~+/]{16,}=*)"
    r"|(?:ws_secret_access_key(?<=aws_secret_access_key)|WS_SECRET_ACCESS_KEY(?<=AWS_SECRET_ACCESS_KEY)"
    r"|ecretAccessKey(?<=SecretAccessKey))[\"']?\s*[=:]\s*[\"']?(?P<sk>[A-Za-z0-9/+]{40})"
    r"|yJ(?<=eyJ)(?<![0-9A-Za-z_\-]eyJ)[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,})"
)
_PASSPORT = re.compile(
    r"[Pp\u30d1\u65c5](?:(?<=[Pp])(?:assport|ASSPORT)|(?<=\u30d1)スポ[ー\-]ト|(?<=\u65c5)券)"
    r"(?:[\s:：#=_\"'()（）.\-]|(?i:no|number|num|nr|id|is)(?![A-Za-z])|番号|ナンバー|は|です){0,12}?"
    r"(?<![A-Za-z0-9])(?P<pp>[A-Za-z]{1,2}[0-9]{7,8}|[0-9]{9})(?![A-Za-z0-9])"
)
# The last character of each order label, both cases (a cheap test before the order label regex):
# ORDER, 注文, ID, NO, NO., NUMBER, 番号. The other labels are looked up by word (see ``_label_words``).
_ORDER_LABEL_ENDS = frozenset("RrDdOo.文号")
_LABEL_SKIP = frozenset(" :：#\"'=_-\t\n\r\u3000")
# Words that make ten bare digits a phone number (before it, or after it), and labels of ids and
# codes that make a bare number no phone even then ("call about order 4155550132").
_PHONE_WORDS = frozenset(
    (
        "phone",
        "phones",
        "telephone",
        "tel",
        "cell",
        "cellphone",
        "mobile",
        "mob",
        "sms",
        "txt",
        "text",
        "texting",
        "texted",
        "call",
        "calling",
        "called",
        "callback",
        "whatsapp",
        "fax",
        "ring",
        "dial",
        "ph",
    )
)
_PHONE_PAIRS = frozenset((("reach", "me"), ("contact", "me"), ("contact", "number"), ("my", "number")))
_PHONE_PAIRS |= {("new", "number"), ("number", "is")}
# Words, camelCase split (customerPhone, TELNo): a capital and lowercase letters, lowercase letters,
# or capitals not followed by a lowercase letter. Written to start with a character class, which
# lets the engine skip in C to the next letter (2.5x faster on text between numbers).
_WORDS = re.compile(r"[A-Za-z](?:(?<=[a-z])[a-z]*|(?<=[A-Z])(?:[a-z]+|[A-Z]*(?![a-z])))")
_CUTS = (
    " .-(（\u3000\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc\uff0d\uff70"  # where a phone's groups may be cut back
)
_PHONE_AFTER = re.compile(
    r"[\s\-–,:]*(?:[(（]\s*(?i:cell|mobile|phone|tel|home|work|office|text|sms|whatsapp)"
    r"|(?i:is|=)\s+(?i:my|the|our)\s+(?i:cell|mobile|phone|number|tel|landline)"
    r"|(?i:call|text|ring)(?![a-z])|(?:に|へ|まで)(?:お?電話|ご?連絡|SMS)|[(（](?:携帯|自宅|電話))"
)
_NO_DIGIT = re.compile(r"[^0-9@]*")
_PLUS_ONE = re.compile(r"(?:\+1|\(\+1\))[\s\-]*$")
_MY_NUMBER_SHAPE = re.compile(rf"[0-9]{{4}}([\- ]?)[0-9]{{4}}\1[0-9]{{4}}{_E}(?!{_S}[0-9])")
# Run on the lowercased window; each starts with a literal, which the engine finds in C.
_SSN_LABEL = re.compile(r"s(?<![a-z]s)(?:sn|ocial\s+security)(?![a-z])")
_MY_NUMBER_LABEL = re.compile(r"m(?<![a-z]m)y[\s_\-]?number")
# The labels ``_code_before``, ``_id_before`` and ``_version_before`` look up: the word before a
# number (a suffix "no", "number", "code", … is looked up with the word before it; "item" is a code
# label only with a suffix or "#"; a version word may end a longer word: "app_version",
# "appVersion", "versionName", not "server").
_LABEL_TAIL = " \t\n\r\u3000\u00a0:：#\"'=_-"
_WORD_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-"
_LABEL_SUFFIXES = frozenset(("no", "no.", "number", "num", "nr", "id", "code"))
_CODE_SUFFIXES = frozenset(("no", "no.", "number", "code"))
_CODE_WORDS = frozenset(
    "isbn isbn-10 isbn-13 jan ean ean-13 gtin asin upc issn sku model part serial".split()  # noqa: SIM905
)
_CODE_JP = ("品番", "型番", "コード", "コ-ド", "商品番号")  # "JANコード", "商品コード" end in コード
_ID_WORDS = frozenset(
    [
        "id",
        "ids",
        "order",
        "orders",
        "tracking",
        "track",
        "isbn",
        "asin",
        "sku",
        "jan",
        "ean",
        "upc",
        "invoice",
        "inv",
        "ticket",
        "ref",
        "reference",
        "account",
        "acct",
        "item",
        "product",
        "model",
        "serial",
        "sn",
        "part",
        "batch",
        "lot",
        "session",
        "request",
        "req",
        "trace",
        "span",
        "txn",
        "transaction",
        "customer",
        "member",
        "user",
        "ts",
        "timestamp",
        "epoch",
        "time",
        "code",
        "zip",
        "postal",
    ]
)
_ID_JP = (
    *(w + "番号" for w in ("追跡", "伝票", "会員", "注文", "商品", "管理", "受付", "問い合わせ", "問合せ")),
    "品番",
    "型番",
)
_VERSION_WORDS = frozenset(("version", "ver", "build", "firmware", "fw", "sdk", "rev", "revision", "release", "v"))
_VERSION_SUFFIXES = frozenset(("name", "code", "number", "no", "string", "str", "id"))
_VERSION_ENDS = frozenset(w[-2:] for w in _VERSION_WORDS | _VERSION_SUFFIXES if len(w) > 1)  # "v" alone: tested apart
_SEPARATORS = frozenset(" .-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc\uff0d\uff70\u3000")  # _S
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# The last two characters of those words and suffixes, lowercased (a test before the word lookup:
# "at", "is", "me", "or" leave there), and of the Japanese labels.
_CODE_ENDS = frozenset(w[-2:] for w in (*_CODE_WORDS, *_CODE_SUFFIXES, *_CODE_JP, "item"))
_ID_ENDS = frozenset(w[-2:] for w in (*_ID_WORDS, *_LABEL_SUFFIXES, *_ID_JP)) | {"号は", "番は"}
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")  # 2·d with its two digits summed
_MY_NUMBER_WEIGHTS = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)  # for digits 1..11, left to right
_MY_NUMBER_ZERO = 48 * sum(_MY_NUMBER_WEIGHTS)
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31,
    "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VA": 22,
    "VG": 24, "XK": 20,
}  # fmt: skip
# Japanese addresses: the municipality (市区町村郡) that must come before the block numbers, the
# prefectures an address may start with, labels glued before it, and the few cities spelled in
# hiragana.
_MUNICIPALITY = frozenset("市区町村郡")
_PREFECTURES = frozenset(  # the 47
    (
        "北海道", "東京都", "大阪府", "京都府", "青森県", "岩手県", "宮城県", "秋田県",
        "山形県", "福島県", "茨城県", "栃木県", "群馬県", "埼玉県", "千葉県", "神奈川県",
        "新潟県", "富山県", "石川県", "福井県", "山梨県", "長野県", "岐阜県", "静岡県",
        "愛知県", "三重県", "滋賀県", "兵庫県", "奈良県", "和歌山県", "鳥取県", "島根県",
        "岡山県", "広島県", "山口県", "徳島県", "香川県", "愛媛県", "高知県", "福岡県",
        "佐賀県", "長崎県", "熊本県", "大分県", "宮崎県", "鹿児島県", "沖縄県",
    )
)  # fmt: skip
_ADDRESS_LABELS = (
    "現住所",
    "住所",
    "送付先",
    "配送先",
    "届先",
    "宛先",
    "所在地",
    "自宅",
    "実家",
    "勤務先",
    "先",
)  # "先": お届け先, 送り先
_HIRAGANA_CITIES = (
    "さいたま",
    "つくばみらい",
    "つくば",
    "いわき",
    "ひたちなか",
    "かすみがうら",
    "みどり",
    "いなべ",
    "みよし",
    "うきは",
    "えびの",
    "たつの",
    "かほく",
    "みやま",
    "うるま",
)
_NOT_TOWN_START = frozenset("はがをにでもへのとやかよりまねぞ")
_COUNT_WORDS = frozenset(  # a number after one of these counts something ("Vol. 3 Sunset Blvd")
    (
        "vol",
        "volume",
        "chapter",
        "ch",
        "book",
        "no",
        "season",
        "episode",
        "ep",
        "part",
        "top",
        "page",
        "p",
        "issue",
        "act",
        "stage",
        "level",
        "round",
        "track",
        "disc",
        "day",
        "week",
        "year",
        "game",
        "gate",
        "platform",
        "route",
        "rank",
        "grade",
        "class",
        "size",
        "pack",
        "set",
        "over",
        "under",
        "about",
    )
)

# Escapes matched through (see the module docstring): JSON escapes, with any run of backslashes
# (text escaped twice), and runs of URL escapes ("%25" before one is a second encoding).
_ESCAPES = re.compile(r'\\+(?:u[0-9A-Fa-f]{4}|[nrtbf"/])|(?:%(?:25)?[0-9A-Fa-f]{2})+')  # matched at a "\" or "%"
_PCT_UNIT = re.compile(r"%(?:25)?([0-9A-Fa-f]{2})")
# A "+" is a space in a token that has a URL escape or a query parameter. Tokens are found with
# rfind and a search that starts at a character class: linear, even on a 10 MB base64 blob.
_IBAN_LETTERS = str.maketrans({chr(65 + i): str(10 + i) for i in range(26)})  # A → 10 … Z → 35
_IBAN_BODY = re.compile(r"[0-9A-Z]+(?: [0-9A-Z]+)*")
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TOKEN_BREAKS = " \t\n\r\"'<>\\"
_TOKEN_BREAK = re.compile(r"""[\s"'<>\\]""")
_URLISH = re.compile(r"[%?&](?:(?<=%)[0-9A-Fa-f]{2}|(?<=[?&])[\w.\-]+=)")
_JSON_CHARS = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "/": "/"}


def _fold_fullwidth(run: re.Match[str]) -> str:
    return run.group().translate(_FOLD)


def _for_matching(text: str) -> str:
    """``text`` folded only when it holds full-width digits, letters, "@" or "+": the patterns
    accept the full-width separators and parentheses themselves, so most Japanese text (whose
    full-width characters are punctuation) is matched as it is, without the cost of folding.

    Folding maps every character of ``_FOLD`` one to one, except a long-vowel mark right after
    katakana. No step makes or removes a katakana character, so the steps' order does not matter."""
    if text.isascii() or _FULLWIDTH_ALNUM.search(text) is None:
        return text
    for char, folded in _FOLD_OUTSIDE:
        if char in text:
            text = text.replace(char, folded)
    if "\u30fc" in text:
        text = _LONG_VOWEL_DASH.sub("-", text)
    return _FULLWIDTH_RUN.sub(_fold_fullwidth, text)


class _Decoded(NamedTuple):
    text: str
    at: list[int]  # index in ``text`` of each character an escape became, ascending
    shift: list[int]  # shift[k]: original index - decoded index after the first k escapes (shift[0] = 0)


def _escapes(text: str) -> Iterator[re.Match[str]]:
    """The escapes in ``text``, found with ``str.find`` (a regex scan of a 500-character Japanese text
    costs ~3.5 µs even for one character class) and matched where a "\\" or "%" is."""
    for ch in "\\%":
        i = text.find(ch)
        while i != -1:
            m = _ESCAPES.match(text, i)
            if m is not None:
                yield m
                i = text.find(ch, m.end())
            else:
                i = text.find(ch, i + 1)


def _decode(text: str) -> _Decoded | None:
    """``text`` with its JSON and URL escapes decoded (None when it has none), and where each
    decoded character came from."""
    reps: list[tuple[int, int, str]] = []
    for m in _escapes(text):
        escape = m.group()
        if escape[0] == "\\":
            tail = escape.lstrip("\\")
            reps.append((m.start(), m.end(), chr(int(tail[1:], 16)) if tail[0] == "u" else _JSON_CHARS[tail]))
            continue
        units = [(m.start() + u.start(), m.start() + u.end(), int(u.group(1), 16)) for u in _PCT_UNIT.finditer(escape)]
        data = bytes(u[2] for u in units)
        try:
            chars = data.decode()
        except UnicodeDecodeError:
            reps.extend((a, b, chr(v)) for a, b, v in units)
            continue
        i = 0
        for ch in chars:
            n = len(ch.encode())
            reps.append((units[i][0], units[i + n - 1][1], ch))
            i += n
    if "+" in text and "=" in text:  # a "+" in a query string is a space ("%2B" is a plus), except "=+81…"
        i = text.find("+")
        token_end = -1
        in_url = False
        while i != -1:
            if i >= token_end:  # the token (run without blanks, quotes, "<>" or backslashes) around this "+"
                token_start = max(text.rfind(c, 0, i) for c in _TOKEN_BREAKS) + 1
                brk = _TOKEN_BREAK.search(text, i)
                token_end = brk.start() if brk is not None else len(text)
                in_url = _URLISH.search(text, token_start, token_end) is not None
            if in_url and not (text[i - 1] == "=" and text[i + 1 : i + 2].isdigit()):
                reps.append((i, i + 1, " "))
            i = text.find("+", i + 1)
    if not reps:
        return None
    reps.sort()
    parts: list[str] = []
    at: list[int] = []
    shift = [0]
    last = d = 0
    for a, b, ch in reps:
        if a < last:
            continue
        parts.append(text[last:a])
        d += a - last
        parts.append(ch)
        at.append(d)
        d += 1
        shift.append(b - d)
        last = b
    parts.append(text[last:])
    return _Decoded("".join(parts), at, shift)


def _original(dec: _Decoded, x: int) -> int:
    """The original offset of decoded offset ``x`` (a start or an end): before it, the escapes
    that became characters before ``x`` ended; so an entity's span covers its escapes whole."""
    return x + dec.shift[bisect_left(dec.at, x)]


def luhn_ok(digits: str) -> bool:
    """The Luhn check: every second digit from the right doubled (its digits summed), all summed."""
    kept, doubled = digits[-1::-2], digits[-2::-2].translate(_LUHN_DOUBLED)
    return (sum((kept + doubled).encode()) - 48 * len(digits)) % 10 == 0  # byte values minus "0"s


def my_number_ok(digits: str) -> bool:
    """The check digit of a Japanese individual number (12 digits; the 12th checks the first 11)."""
    r = (sum(map(mul, digits[:11].encode(), _MY_NUMBER_WEIGHTS)) - _MY_NUMBER_ZERO) % 11  # byte values: "0" is 48
    return int(digits[11]) == (0 if r <= 1 else 11 - r)


def iban_ok(compact: str) -> bool:
    """Length for its country and the ISO 13616 check (mod 97 of the rearranged number is 1)."""
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    return int((compact[4:] + compact[:4]).translate(_IBAN_LETTERS)) % 97 == 1


def _ssn_ok(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _only_digits(s: str) -> str:
    """``s`` without its separators. Matched values hold ASCII digits only (full-width ones
    were folded), so ``isdigit`` keeps exactly those."""
    digits = s.replace("-", "").replace(" ", "")  # the usual separators, ~4x faster than the filter
    return digits if digits.isdigit() else "".join(filter(str.isdigit, s))


def _label_end(norm: str, start: int) -> int:
    """Index of the last character before ``start`` that is no blank, colon, "#", "=", "_", "-" or quote."""
    i = start - 1
    while i >= 0 and (norm[i] in _LABEL_SKIP or norm[i].isspace()):
        i -= 1
    return i


def _after_label(label: re.Pattern[str], label_ends: frozenset[str], norm: str, start: int, window: int = 24) -> bool:
    """The text just before ``start`` ends with ``label`` (e.g. "ISBN ", "Order #"). Checked
    first, because it is cheap: past the blanks, colon, "#", "=" or quotes that may follow a
    label, the character before the number is one of ``label_ends``, the last characters of the
    label's words (most numbers follow a word that is no label, and the regex never runs)."""
    i = _label_end(norm, start)
    return i >= 0 and norm[i] in label_ends and label.search(norm, max(0, start - window), start) is not None


def _label_words(norm: str, start: int, window: int) -> tuple[str, str, str, str]:
    """The text before ``start`` (``window`` characters) without the blanks, colons, "#", "=",
    "_", "-" and quotes after a label; its last ASCII word lowercased (letters, digits, "." and
    "-": "isbn-13", "no."); the word before that; and what was stripped. C-level ``rstrip``s."""
    raw = norm[max(0, start - window) : start]
    text = raw.rstrip(_LABEL_TAIL)
    rest = text.rstrip(_WORD_CHARS)
    before = rest.rstrip(_LABEL_TAIL)
    return text, text[len(rest) :].lower(), before[len(before.rstrip(_WORD_CHARS)) :].lower(), raw[len(text) :]


def _code_before(norm: str, start: int) -> bool:
    """A product-code label right before ``start`` ("ISBN ", "SKU-", "Model No.", "item #", "品番 ")."""
    if norm[max(0, start - 24) : start].rstrip(_LABEL_TAIL)[-2:].lower() not in _CODE_ENDS:
        return False  # most words before a number end in two letters no label ends in ("with", "at")
    text, word, previous, tail = _label_words(norm, start, 24)
    return (
        word in _CODE_WORDS
        or (word in _CODE_SUFFIXES and (previous in _CODE_WORDS or previous == "item"))
        or (word == "item" and "#" in tail)
        or (text[-1:] > "\x7f" and text.endswith(_CODE_JP))
    )


def _id_before(norm: str, start: int) -> bool:
    """An id or code label right before ``start`` ("tracking number ", "user_id=", "会員番号 ")."""
    if norm[max(0, start - 32) : start].rstrip(_LABEL_TAIL)[-2:].lower() not in _ID_ENDS:
        return False
    text, word, previous, _tail = _label_words(norm, start, 32)
    return (
        word in _ID_WORDS
        or word.rpartition("-")[2] in _ID_WORDS  # "order-id"
        or (word in _LABEL_SUFFIXES and previous in _ID_WORDS)
        or (text[-1:] > "\x7f" and text.rstrip("は").endswith(_ID_JP))
    )


def _version_before(norm: str, start: int) -> bool:
    """A version label right before ``start`` ("app_version=", "Build ", "versionName: ", "v=")."""
    text = norm[max(0, start - 24) : start].rstrip(" \t\n\r\u3000\u00a0\"'=:：#")
    if text.endswith(("バージョン", "バ-ジョン")):
        return True
    letters = text.rstrip("0123456789_-.")  # ends with the last letter of the word, if it has one
    if letters[-1:] not in ("v", "V") and letters[-2:].lower() not in _VERSION_ENDS:
        return False  # the last word ("ip", "at") is no version word or suffix: most words leave here
    word = text[len(text.rstrip(_GLUE_CHARS + "0123456789.")) :].rstrip(".")
    parts = [w.lower() for w in _WORDS.findall(word)]  # "appVersion" → app, version; "os_ver" → os, ver
    if len(parts) > 1 and parts[-1] in _VERSION_SUFFIXES:
        parts.pop()
    return bool(parts) and parts[-1] in _VERSION_WORDS and (parts[-1] != "v" or len(parts) == 1)


def _phone_context(norm: str, start: int, end: int) -> bool:
    """A phone word in the 24 characters before the number (after its last digit or "@", so a word
    that belongs to an earlier value does not count), "+1" right before it, or right after it a
    phrase about it ("(cell)", "is my phone", "に電話")."""
    before = norm[max(0, start - 24) : start]
    if _PLUS_ONE.search(before):
        return True
    tail = _NO_DIGIT.match(before[::-1])  # the text after the last digit or "@", reversed
    if tail is not None and _phone_words(tail.group()[::-1]):
        return True
    return _PHONE_AFTER.match(norm, end, end + 24) is not None


def _phone_words(text: str) -> bool:
    """``text`` holds a phone word ("call", "cell", "Phone", "reach me", "電話", …)."""
    if "電話" in text or "携帯" in text or "連絡先" in text or "whatsapp" in text.lower():
        return True  # (the camelCase split below would see "Whats App")
    words = " ".join(_WORDS.findall(text)).lower().split()  # ASCII letters only: one lower() for all
    return not _PHONE_WORDS.isdisjoint(words) or not _PHONE_PAIRS.isdisjoint(pairwise(words))


def _word_before(norm: str, start: int) -> str:
    """The word just before ``start`` (past blanks and a full stop), lowercased."""
    text = norm[max(0, start - 16) : start].rstrip().rstrip(".")
    return text[len(text.rstrip(_LETTERS)) :].lower()


def _phone_ok(kind: str, digits: str, trunk: bool = False) -> bool:
    n = len(digits)
    if kind == "intl":
        if not 8 <= n <= 15:
            return False
        if digits.startswith("81"):  # Japan: +81, 9-10 national digits, maybe a "(0)" trunk prefix
            return 11 <= n <= (13 if trunk else 12)
        if digits.startswith("1"):
            return n == 11
        return True
    if kind == "jp":  # mobile/IP/0800 numbers have 11 digits, landlines and 0120/0570 have 10
        if n == 11:
            return digits[:3] in ("070", "080", "090", "050", "060") or digits.startswith("0800")
        return n == 10 and digits[1] != "0"
    return n in (10, 11)  # us, with or without the leading 1


def _balanced(value: str) -> str:
    """``value`` without a closing parenthesis it does not open ("(+1 415 555 0132)") and without
    an opening one it does not close ("+81 3 1234 5678 (954")."""
    opening = max(value.rfind("("), value.rfind("（"))
    if opening > 0 and value.find(")", opening) == -1 and value.find("）", opening) == -1:
        value = value[:opening].rstrip(" .-")
    while value and value[-1] in ")）" and value.count("(") + value.count("（") < value.count(")") + value.count("）"):
        value = value[:-1]
    return value


def _phone(m: re.Match[str], kind: str, norm: str, out: list[Match]) -> None:
    value = m.group()
    start = m.start()
    if kind == "intl00" and start >= 2 and norm[start - 1] in ":：" and norm[start - 2].isdigit():
        return  # the minutes of a time ("10:00-18:00 4111 …"), not an international prefix
    if kind == "intl00" and (mn := _MY_NUMBER_SHAPE.match(norm, start)) is not None:  # "0054-6202-0785"
        digits = _only_digits(mn.group())
        if my_number_ok(digits) and _my_number_label(norm, start):
            out.append(Match(start, mn.end(), MY_NUMBER, digits))
            return
    prefix = 0  # digits of an international prefix (00, 010) before the country code
    if kind in ("intl", "intl00"):
        value = _balanced(value)
        digits = _only_digits(value)
        if kind == "intl00":
            prefix = 3 if digits.startswith("010") else 2
        while not _phone_ok("intl", digits[prefix:], "(0)" in value):  # greedy groups may have taken what follows
            cut = max(value.rfind(c) for c in _CUTS)
            if cut <= 0:
                break
            value = _balanced(value[:cut].rstrip(" .-("))
            digits = _only_digits(value)
        ok = _phone_ok("intl", digits[prefix:], "(0)" in value)
    else:
        digits = _only_digits(value)
        ok = _phone_ok(kind, digits)
    if not ok:
        return
    if value[0] not in "+(（" and kind != "intl00" and _code_before(norm, start):
        return  # a product code; never one written "+81 …", "(03) …" or "0044 …"
    end = start + len(value)
    bare = value.isdigit()
    if bare and start and norm[start - 1] in "+-":
        return  # "-0312345678", "+4155550132" read from its second character
    if kind == "us10":  # ten bare digits: a phone only beside a phone word, never after an id label
        refused = _id_before(norm, start) or not _phone_context(norm, start, end)
    elif bare and kind in ("jp", "intl00"):  # bare digits after an id label are that id; "00…" needs a phone word
        refused = _id_before(norm, start) or (kind == "intl00" and not _phone_context(norm, start, end))
    else:
        refused = False
    if refused:
        return
    if kind == "intl":
        canonical = "+" + _only_digits(value.replace("(0)", ""))
    elif kind == "intl00":
        canonical = "+" + _only_digits(value.replace("(0)", ""))[prefix:]
    else:
        canonical = digits
    out.append(Match(start, end, PHONE, canonical))


def _prefecture_start(chain: str) -> int:
    """Where the first prefecture name in ``chain`` starts, or -1 (names are 3 or 4 characters and
    end in 都道府県)."""
    for i, ch in enumerate(chain):
        if ch in "都道府県":
            if chain[max(0, i - 2) : i + 1] in _PREFECTURES and i >= 2:
                return i - 2
            if i >= 3 and chain[i - 3 : i + 1] in _PREFECTURES:
                return i - 3
    return -1


def _jp_address_start(norm: str, start: int) -> int:
    """Where the address whose block numbers start at ``start`` begins (its prefecture or
    municipality), or -1: the block must follow a municipality (市区町村郡, then at most a town
    name), and a label glued before it (住所, 送付先, …) is not part of it."""
    j = start
    lo = max(0, start - 12)
    while j > lo and norm[j - 1] not in _MUNICIPALITY and "\u3040" <= norm[j - 1] <= "\u9fff":
        j -= 1
    if j == 0 or norm[j - 1] not in _MUNICIPALITY:
        return -1
    town = norm[j:start]
    if town and "\u3040" <= town[0] <= "\u309f" and (town[0] in _NOT_TOWN_START or len(town) < 3):
        return -1  # a particle ("渋谷区で2-3日"), not a town
    k = j - 1
    lo = max(0, k - 16)
    while True:
        while k > lo and (
            "\u4e00" <= norm[k - 1] <= "\u9fff" or "\u30a1" <= norm[k - 1] <= "\u30fa" or norm[k - 1] in "々ヶ"
        ):
            k -= 1
        if norm[k] not in "市町村":
            break
        name = next((c for c in _HIRAGANA_CITIES if norm.startswith(c, k - len(c))), None)
        if name is None:
            break
        k -= len(name)
    chain = norm[k:j]
    pref = _prefecture_start(chain)
    if pref != -1:
        k += pref
    else:
        for label in _ADDRESS_LABELS:
            if norm.startswith(label, k):
                k += len(label)
                break
    first_muni = next(i for i in range(k, j) if norm[i] in _MUNICIPALITY)
    if pref == -1 and first_muni == k:
        return -1  # "区1-2-3": no name before the municipality's suffix
    return k


# Four octets (one digit, or no leading zero and at most 255); the first neither 0 ("this
# network"), 127 (loopback) nor 224 and above (multicast, reserved, broadcast and netmasks).
_OCTET = r"(?:[0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])"
_PUBLIC_IPV4 = re.compile(rf"(?:[1-9][0-9]?|1[01][0-9]|12[0-689]|1[3-9][0-9]|2[01][0-9]|22[0-3])(?:\.{_OCTET}){{3}}")


def _classify(m: re.Match[str], norm: str, out: list[Match]) -> None:
    kind = m.lastgroup
    kind = _KIND.get(kind, kind) if kind is not None else None
    value = m.group()
    start, end = m.span()
    glued = start > 0 and norm[start - 1] in _ASCII_LETTERS and kind != "iban"  # after a glued label
    if glued and not _glued_label(norm, start):
        return  # "hotel0312345678": the label's letters end a longer word
    if kind in _PHONE_KINDS:
        _phone(m, kind, norm, out)
    elif kind == "bare":
        _bare(m, value, norm, out)
    elif kind == "order":
        out.append(Match(start, end, ORDER_ID, value))
    elif kind == "card":
        digits = value.replace(" ", "").replace("-", "")  # the only separators the branch allows
        if luhn_ok(digits) and not _code_before(norm, start):
            out.append(Match(start, end, CARD, digits))
    elif kind == "ipv4":
        if (
            _PUBLIC_IPV4.fullmatch(value) is not None
            and not _version_before(norm, start)
            and not _user_agent_version(norm, start)
        ):
            out.append(Match(start, end, IP, value))
    elif kind == "ssn":
        digits = _only_digits(value)
        if _ssn_ok(digits) and (value[3] == "-" or _ssn_label(norm, start)) and not _code_before(norm, start):
            out.append(Match(start, end, SSN, digits))
    elif kind == "mynum":
        digits = _only_digits(value)
        if my_number_ok(digits) and _my_number_label(norm, start):
            out.append(Match(start, end, MY_NUMBER, digits))
    elif kind == "usaddr":
        before = norm[start - 1] if start else " "
        if (
            before not in ".#$¥€£/-"
            and not (before == "," and norm[start - 2 : start - 1].isdigit())  # "1,200 Main St" is a count
            and _word_before(norm, start) not in _COUNT_WORDS
        ):
            out.append(Match(start, end, ADDRESS, " ".join(value.split())))
    elif kind == "iban":
        _iban(norm, start - 2, out)


def _bare(m: re.Match[str], value: str, norm: str, out: list[Match]) -> None:
    """A run of digits without separators (9 to 16, or 9 to 12, 15 to 17 and 19 not starting with
    0: the regex leaves out the lengths nothing has, such as JAN codes), by its length and first
    digits: an order id
    after its label (17), a card (16, 19, or 15 for "34"/"37"), a My Number after its label
    (12), an SSN after its label (9), a number dialled with "00"/"010", a Japanese number (0 and
    10 or 11 digits), a US one (10 digits, or 11 with the leading 1)."""
    start, end = m.span()
    n = len(value)
    if n == 17:
        if _after_label(_ORDER_LABEL, _ORDER_LABEL_ENDS, norm, start):
            out.append(Match(start, end, ORDER_ID, value))
        return
    if (n in (16, 19) and value[0] in "23456") or (n == 15 and value[0] == "3" and value[1] in "47"):
        if luhn_ok(value) and not _code_before(norm, start):
            out.append(Match(start, end, CARD, value))
        return
    more = norm[end : end + 2]
    grouped = more[:1] in _SEPARATORS and more[1:].isdigit()  # another digit group follows
    if n == 12 and not grouped and my_number_ok(value) and _my_number_label(norm, start):
        out.append(Match(start, end, MY_NUMBER, value))
        return
    if n == 9:
        if not grouped and _ssn_ok(value) and _ssn_label(norm, start) and not _code_before(norm, start):
            out.append(Match(start, end, SSN, value))
        return
    if more[:1] in ".-" and more[1:].isdigit() and value[0] == "0":
        return  # "0312345678-1", "0312345678.5": no phone (a number glued on)
    if value.startswith("00") or value.startswith("010"):
        _phone(m, "intl00", norm, out)
    elif value[0] == "0":
        if n in (10, 11):
            _phone(m, "jp", norm, out)
    elif ((n == 10 and value[3] in "23456789") or (n == 11 and value[0] == "1" and value[1] in "23456789")) and value[
        n - 7
    ] in "23456789":  # area code, then exchange code, both [2-9]xx
        _phone(m, "us10", norm, out)


def _glued_label(norm: str, start: int) -> bool:
    """The letters glued before ``start`` are a label: the whole run ("TEL", "orderid", "telno",
    not "hotel"), or its last part after "_" or "-" ("my_number", "order-id")."""
    text = norm[max(0, start - 16) : start]
    word = text[len(text.rstrip(_GLUE_CHARS)) :].lower()
    if word.replace("_", "").replace("-", "") in _GLUED_WORDS:
        return True
    last = word.replace("-", "_").rpartition("_")[2]
    return last != word and last in _GLUED_WORDS


def _my_number_label(norm: str, start: int) -> bool:
    """マイナンバー, 個人番号 or "my number" ("My Number", "mynumber", "my_number") in the 24 characters before."""
    window = norm[max(0, start - 24) : start]
    if "マイナンバ" in window or "個人番号" in window:
        return True
    lower = window.lower()
    return "number" in lower and _MY_NUMBER_LABEL.search(lower) is not None


def _ssn_label(norm: str, start: int) -> bool:
    """ "SSN", "social security" or 社会保障番号 in the 32 characters before."""
    window = norm[max(0, start - 32) : start]
    if "社会保障番号" in window:
        return True
    lower = window.lower()
    return ("ssn" in lower or "security" in lower) and _SSN_LABEL.search(lower) is not None


def _user_agent_version(norm: str, start: int) -> bool:
    """``start`` follows "Product/" (a user agent's "MangaAssist/1.0.3.2"), not a path's "/"."""
    if start < 2 or norm[start - 1] != "/" or not norm[start - 2].isalnum():
        return False
    i = start - 2
    while i > 0 and (norm[i - 1].isalnum() or norm[i - 1] in "._-"):
        i -= 1
    return norm[i].isalpha() and (i == 0 or norm[i - 1] not in "/:")


def _iban(norm: str, start: int, out: list[Match]) -> None:
    """The IBAN starting at ``start`` (its country code): exactly as many characters as its
    country's IBANs have, in groups of four or without spaces, and a valid check."""
    length = _IBAN_LENGTHS.get(norm[start : start + 2])
    body = _IBAN_BODY.match(norm, start)
    if length is None or body is None:
        return
    total = 0
    i = start
    for group in body.group().split(" "):  # groups of four (or one group) until the country's length
        total += len(group)
        i += len(group) + 1
        if total >= length:
            break
    i -= 1
    if total != length or (i < len(norm) and norm[i].isascii() and (norm[i].isalnum() or norm[i] == "_")):
        return  # not the country's length, or more letters glued on ("…3000abc")
    compact = norm[start:i].replace(" ", "")
    if iban_ok(compact) and _DIGIT_RUN.search(norm, start, i) is not None:  # may_hold_pii's gate holds
        out.append(Match(start, i, IBAN, compact))


def _scan_digits(norm: str, out: list[Match]) -> None:
    for m in _DIGITS.finditer(norm):
        _classify(m, norm, out)


def _scan_jp_addresses(norm: str, out: list[Match]) -> None:
    """Block numbers within 13 characters after a municipality character (at most a town name
    between), each address once."""
    seen = -1
    for ch in "市区町村郡":
        k = norm.find(ch)
        while k != -1:
            m = _JP_ADDRESS.search(norm, k + 1, k + 64)
            if m is not None and m.start() <= k + 13 and m.start() != seen:
                begin = _jp_address_start(norm, m.start())
                if begin != -1:
                    seen = m.start()
                    out.append(Match(begin, m.end(), ADDRESS, norm[begin : m.end()]))
            k = norm.find(ch, k + 1)


def _scan_emails(norm: str, out: list[Match]) -> None:
    at = norm.find("@")
    while at != -1:
        # the local part: the run of (at most 64) local-part characters before "@", found in C
        # by rstrip, without the dots or hyphens it may not start with
        before = norm[max(0, at - 64) : at]
        start = at - len(before[len(before.rstrip(_EMAIL_LOCAL_CHARS)) :].lstrip(".-"))
        dm = _EMAIL_DOMAIN.match(norm, at + 1) if start < at else None
        if dm is not None:
            out.append(Match(start, dm.end(), EMAIL, norm[start : dm.end()].lower()))
            at = norm.find("@", dm.end())
        else:
            at = norm.find("@", at + 1)


def _scan_ipv6(norm: str, out: list[Match]) -> None:
    n = len(norm)
    pos = 0
    while (gate := _IPV6_GATE.search(norm, pos)) is not None:
        left, right = gate.start(), gate.end()
        while left > 0 and norm[left - 1] in _IPV6_CHARS:
            left -= 1
        while right < n and norm[right] in _IPV6_CHARS:
            right += 1
        pos = right
        while left < right and norm[left] == ".":
            left += 1
        end = right
        while end > left and norm[end - 1] == ".":
            end -= 1
        if (left > 0 and norm[left - 1] in _WORD) or (right < n and norm[right] in _WORD):
            continue  # part of a longer word: "std::map", a hash, a path
        if norm[end - 1] == ":" and norm[end - 2] != ":":
            end -= 1  # "2001:db8::1: message", a colon after the address
        value = norm[left:end]
        if value.count(":") < 2:
            continue
        try:
            address = ipaddress.IPv6Address(value)
        except ValueError:
            continue
        if address.is_loopback or address.is_unspecified:
            continue  # "::1" and "::" are nobody's
        out.append(Match(left, end, IP, value.lower()))


_START = attrgetter("start")


def _find(text: str) -> list[Match]:
    norm = _for_matching(text)
    found: list[Match] = []
    # What each secret needs: "AKIA" or "ASIA", "earer", "eyJ", or a key name ("ecret", or
    # "ECRET" in AWS_SECRET_ACCESS_KEY). A search for one character costs ~20 ns, for a word
    # ~250 ns, so a letter that the word holds ("K", "J") is looked for first.
    if (
        ("K" in norm and ("AKIA" in norm or "ECRET" in norm))
        or "ASIA" in norm
        or "earer" in norm
        or "ecret" in norm
        or ("J" in norm and "eyJ" in norm)
    ):
        for m in _SECRETS.finditer(norm):
            g = m.lastgroup or 0
            value = m.group(g).rstrip(".") if g == "tok" else m.group(g)  # a sentence's full stop
            found.append(Match(m.start(g), m.start(g) + len(value), SECRET, value))
    if "@" in norm:
        _scan_emails(norm, found)
    _scan_digits(norm, found)
    if ":" in norm:
        _scan_ipv6(norm, found)
    ascii_only = norm.isascii()  # O(1): the Japanese gates are skipped on ASCII text
    if not ascii_only and ("区" in norm or "市" in norm or "町" in norm or "郡" in norm or "村" in norm):
        _scan_jp_addresses(norm, found)
    if (
        "assport" in norm
        or ("P" in norm and "ASSPORT" in norm)  # a word holds its letters: one-character tests first
        or (not ascii_only and (("ポ" in norm and "パスポ" in norm) or ("券" in norm and "旅券" in norm)))
    ):
        for m in _PASSPORT.finditer(norm):
            found.append(Match(m.start("pp"), m.end("pp"), PASSPORT, m.group("pp").upper()))
    if len(found) < 2:
        return found
    found.sort(key=_START)  # stable: at one start, the scans' order
    kept = [found[0]]
    for item in found[1:]:
        last = kept[-1]
        if item.start >= last.end:
            kept.append(item)
        elif item.start == last.start and item.end > last.end:
            kept[-1] = item  # at one start, the longest wins (the first of equal ones)
    return kept


def find_pii(text: str) -> list[Match]:
    """Every entity in ``text``, sorted, without overlaps (the longer of two overlapping wins)."""
    if len(text) < MIN_LEN:
        return []
    # _decode finds nothing without a "\\" or "%", or a "+" in a query string (which has a "=")
    if ("\\" in text or "%" in text or ("+" in text and "=" in text)) and (dec := _decode(text)) is not None:
        first = dec.at[0]  # before the first escape, offsets are the same
        return [
            m if m.end <= first else Match(_original(dec, m.start), _original(dec, m.end), m.entity, m.canonical)
            for m in _find(dec.text)
        ]
    return _find(text)


# What ``may_hold_pii`` looks for: where the digit scan could start an entity (its first
# character with the six that its look-ahead requires, or a house number before a capitalised
# word), written without look-arounds so that the engine skips in C to the first candidate.
_DIGIT_RUN = re.compile(f"{_FIRST}{_RUN}{{6}}")
_GATE = re.compile(f"{_FIRST}(?:{_RUN}{{6}}|[0-9]{{0,5}}[A-Z]?[ +][A-Z0-9])")
_JP_BLOCK = re.compile(f"[0-9][0-9]{{0,3}}(?:丁目|番|{_D})")


def may_hold_pii(text: str) -> bool:
    """False only when ``find_pii(text)`` is certainly empty; a cheap test (~0.2-0.5 µs on the
    short ids, names and enum values most attribute values are) that lets the redactor skip
    ``find_pii`` (~1-2 µs even on a short clean string).

    It checks the gates ``find_pii`` itself scans behind, so it is a necessary condition by
    construction: text with a JSON ``\\u`` escape or a "%" may decode to anything, so it always
    may hold PII (other escapes decode to characters no gate looks for, and "+" to the space that
    the US address gate accepts as "+" too); on the rest,
    without full-width letters or digits, the matching copy is ``text`` itself, and then an
    e-mail needs an "@", an IPv6 address a ":" (the IPv6 gate is two colons), a secret one of the
    secret gates, a Japanese address a block number ("1-", "1丁目", "1番") in non-ASCII text, a US
    street address a house number before a capitalised word or a digit ("742 E", "350 5", or
    "742+E" in a query string), and
    every other entity of the digit scan a ``_FIRST`` character followed by six ``_RUN``
    characters (the look-ahead ``_DIGITS`` demands at every start; a passport number has seven
    digits, and an IBAN is only reported when it holds such a run). Text with full-width letters
    or digits is folded before matching, which can create any of these, so it always may hold
    PII. ``tests/gateway/test_redactor.py`` checks the implication on both labeled corpora,
    every cut of them and random text.
    """
    if len(text) < MIN_LEN:
        return False
    if not text.isascii() and (_FULLWIDTH_ALNUM.search(text) is not None or _JP_BLOCK.search(text) is not None):
        return True
    return (
        "@" in text
        or ":" in text
        or _GATE.search(text) is not None
        or "\\u" in text
        or "%" in text
        or "AKIA" in text
        or "ASIA" in text
        or "earer" in text
        or "eyJ" in text
        or "ecret" in text
        or "ECRET" in text
    )
