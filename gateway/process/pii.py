"""PII detection in free text: where the e-mails, phones, order ids, cards, IPs and secrets are.

``find_pii(text)`` returns non-overlapping ``Match(start, end, entity, canonical)`` in order.
Offsets index the ORIGINAL string: matching runs on a copy normalised by a one-to-one
``str.translate`` table (full-width ASCII → ASCII, ideographic space → space, the dash
variants people type → ``-``), which keeps every character at its index, so a match found on
the normalised copy is replaced at the same offsets in the original.

Design, for speed (DESIGN §8: ≤ 50 µs per 500-character text, and most strings are short ids):

- one combined regex for everything that starts with a digit, ``+`` or ``(`` (phones, order
  ids, cards, IPv4), whose branches are tried at digit positions only;
- separate scans only when a cheap ``in`` test says they can match: ``@`` for e-mail, ``::``
  or hex-colon runs for IPv6, ``AKIA``/``ASIA``/``earer``/``eyJ``/``ecret``/``ECRET`` for secrets;
- candidates are then checked in Python: Luhn for cards, digit counts and prefixes for
  phones, octet ranges for IPv4, ``ipaddress`` for IPv6, and a look at the preceding words
  (``ISBN``, ``JAN``, ``ASIN``) for digit runs that are product codes;
- per candidate, Python does little: the label regex runs only when the character before the
  number can end a label, and Luhn and the e-mail's local part use C-level string methods.
  Of the ~25-30 µs a dense text costs (bench/redaction.py), about half is the regex engine
  (folding, and entering the digit pattern at every digit) and most of the rest is ~1.5 µs of
  Python per entity found.

``phonenumbers`` was measured and not used: its matcher costs ~1.5 ms per 500-character text
and ``parse`` + ``is_valid_number`` ~70 µs per candidate here, both far over the budget.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

EMAIL, PHONE, ORDER_ID, CARD, IP, SECRET = "EMAIL", "PHONE", "ORDER_ID", "CARD", "IP", "SECRET"
ENTITIES = (EMAIL, PHONE, ORDER_ID, CARD, IP, SECRET)

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
# str.translate over a whole Japanese text costs ~0.05 µs per character; fold only the runs.
_FULLWIDTH_ALNUM = re.compile("[\uff0b\uff10-\uff19\uff20-\uff3a\uff41-\uff5a]")
# Written "[x][x]*", not "[x]+": only a pattern that starts with a plain character class lets the
# regex engine skip in C to the next candidate (3.4 µs instead of 6 µs over 500 characters).
_FOLDABLE = re.compile(
    "[\uff01-\uff5e\u3000\u2010-\u2015\u2212\u30fc\uff70][\uff01-\uff5e\u3000\u2010-\u2015\u2212\u30fc\uff70]*"
)

_W = "0-9A-Za-z_"  # ASCII word characters: Japanese text around a number counts as a boundary
_E = rf"(?![{_W}])"
_S = "[ .\\-\u2010-\u2015\u2212\u30fc\uff0d\uff70\u3000]"  # one separator people type between digit groups
_O = "[(\uff08]"  # opening and closing parentheses, ASCII or full-width
_C = "[)\uff09]"
_END = rf"(?![{_W}]|[.\-][0-9])"  # no more digits glued on ("2026-03-24.1" is no phone)

# The characters an entity of the digit scan can start with, and the ones that must follow it.
_FIRST = r"[0-9+(D\uff08]"
_RUN = r"[0-9 .\-()+\u2010-\u2015\u2212\u30fc\uff0d\uff70\u3000\uff08\uff09]"

# One pass over the text. The pattern starts with a character class, so the regex engine
# skips in C to the characters that can start an entity (a digit, "+", "(" or the "D" of a
# digital order id) and tries the branches only there. Each branch therefore describes its
# entity WITHOUT the first character, which it checks with a look-behind; the look-behind
# after the class checks that the first character does not continue a word, id or number.
# The look-ahead drops short numbers ("12 volumes", "¥528") before any branch is tried: every
# entity has at least six more digits or separators after its first character. At one position
# the first matching branch wins.
_DIGITS = re.compile(
    rf"""
    {_FIRST}(?<![{_W}].)(?={_RUN}{{6}})
    (?:
      (?P<order>(?<=[0-9D])[0-9]{{2}}-[0-9]{{7}}-[0-9]{{7}}{_E})
    | (?P<order17>(?<=[0-9])[0-9]{{16}}{_E})
    | (?P<card>(?<=[0-9])[0-9]{{3}}(?P<cs>[ \-]?)[0-9]{{4}}(?P=cs)[0-9]{{4}}(?P=cs)[0-9]{{4}}(?:(?P=cs)?[0-9]{{3}})?{_E}
             |(?<=3)[47][0-9]{{2}}(?P<as>[ \-]?)[0-9]{{6}}(?P=as)[0-9]{{5}}{_E})
    | (?P<intl>(?<=\+)[1-9][0-9]{{0,2}}(?:{_S}?{_O}?[0-9]{{1,5}}{_C}?){{1,5}}{_END})
    | (?P<jp>(?<![+\-].)
        (?:(?<=0)[0-9]{{1,4}}{_S}[0-9]{{1,4}}{_S}[0-9]{{3,4}}
          |(?<=0)[0-9]{{1,4}}{_O}[0-9]{{1,4}}{_C}[0-9]{{3,4}}
          |(?<=[(\uff08])0[0-9]{{1,4}}{_C}\ ?[0-9]{{1,4}}{_S}?[0-9]{{3,4}}
          |(?<=0)[0-9]{{9,10}}){_END})
    | (?P<us>(?<![+\-].)
        (?:(?<=1){_S}(?:{_O}[2-9][0-9]{{2}}{_C}\ ?|[2-9][0-9]{{2}}{_S})
          |(?<=[(\uff08])[2-9][0-9]{{2}}{_C}\ ?
          |(?<=[2-9])[0-9]{{2}}{_S})
        [2-9][0-9]{{2}}{_S}[0-9]{{4}}{_END})
    | (?P<ipv4>(?<![.].)(?<=[0-9])[0-9]{{0,2}}\.(?:[0-9]{{1,3}}\.){{2}}[0-9]{{1,3}}(?![{_W}]|\.[0-9]))
    )
    """,
    re.VERBOSE,
)
_ORDER_LABEL = re.compile(r"(?:order|注文)\s*(?:id|no\.?|number|番号)?\s*[#:：]?\s*$", re.IGNORECASE)
_EMAIL_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])"
)
_EMAIL_LOCAL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-"
_IPV6_GATE = re.compile(r":[0-9A-Fa-f]{0,4}:")  # starts with a literal: found in C
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_WORD = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_SECRETS = re.compile(
    r"(?<![0-9A-Za-z])(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])"
    r"|[Bb]earer\s+(?P<tok>(?=[A-Za-z0-9\-._~+/]*[0-9])[A-Za-z0-9\-._~+/]{16,}=*)"
    r"|(?:aws_secret_access_key|AWS_SECRET_ACCESS_KEY|SecretAccessKey)[\"']?\s*[=:]\s*[\"']?(?P<sk>[A-Za-z0-9/+]{40})"
    r"|(?<![0-9A-Za-z_\-])eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
)
_VERSION_LABEL = re.compile(r"(?:version|ver\.?|バージョン|build|firmware)\s*[:：]?\s*$", re.IGNORECASE)
_CODE_LABEL = re.compile(
    r"(?:ISBN(?:-1[03])?|JAN|EAN(?:-13)?|GTIN|ASIN|UPC|ISSN)\s*(?:code|コード)?\s*[:：#]?\s*$", re.IGNORECASE
)
# The last character of each label above, both cases (a cheap test run before the label regex):
# ORDER, 注文, ID, NO, NO., NUMBER, 番号 / VERSION, VER, VER., バージョン, BUILD, FIRMWARE /
# ISBN, ISBN-10, ISBN-13, JAN, EAN, GTIN, ASIN, UPC, ISSN, CODE, コード.
_ORDER_LABEL_ENDS = frozenset("RrDdOo.文号")
_VERSION_LABEL_ENDS = frozenset("NnRrDdEe.ン")
_CODE_LABEL_ENDS = frozenset("NnCcEe03ド")
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")  # 2·d with its two digits summed


def _fold_run(run: re.Match[str]) -> str:
    return run.group().translate(_FOLD)


def _for_matching(text: str) -> str:
    """``text`` folded only when it holds full-width digits, letters, "@" or "+": the patterns
    accept the full-width separators and parentheses themselves, so most Japanese text (whose
    full-width characters are punctuation) is matched as it is, without the cost of folding."""
    if text.isascii() or _FULLWIDTH_ALNUM.search(text) is None:
        return text
    return _FOLDABLE.sub(_fold_run, text)


def luhn_ok(digits: str) -> bool:
    """The Luhn check: every second digit from the right doubled (its digits summed), all summed."""
    kept, doubled = digits[-1::-2], digits[-2::-2].translate(_LUHN_DOUBLED)
    return (sum((kept + doubled).encode()) - 48 * len(digits)) % 10 == 0  # byte values minus "0"s


def _only_digits(s: str) -> str:
    """``s`` without its separators. Matched values hold ASCII digits only (full-width ones
    were folded), so ``isdigit`` keeps exactly those."""
    return "".join(filter(str.isdigit, s))


def _after_label(label: re.Pattern[str], label_ends: frozenset[str], norm: str, start: int, window: int = 24) -> bool:
    """The text just before ``start`` ends with ``label`` (e.g. "ISBN ", "Order #"). Checked
    first, because it is cheap: past the blanks, colon or "#" that may follow a label, the
    character before the number is one of ``label_ends``, the last characters of the label's
    words (most numbers follow a word that is no label, and the regex never runs)."""
    i = start - 1
    while i >= 0 and (norm[i] in " :：#" or norm[i].isspace()):
        i -= 1
    return i >= 0 and norm[i] in label_ends and label.search(norm, max(0, start - window), start) is not None


def _phone_ok(kind: str, digits: str) -> bool:
    n = len(digits)
    if kind == "intl":
        if not 8 <= n <= 15:
            return False
        if digits.startswith("81"):  # Japan: +81, 9-10 national digits, maybe a "(0)" trunk prefix
            return 11 <= n <= 13
        if digits.startswith("1"):
            return n == 11
        return True
    if kind == "jp":  # mobile/IP/0800 numbers have 11 digits, landlines and 0120/0570 have 10
        if n == 11:
            return digits[:3] in ("070", "080", "090", "050", "060") or digits.startswith("0800")
        return n == 10 and digits[1] != "0"
    return n in (10, 11)  # us, with or without the leading 1


def _classify(m: re.Match[str], norm: str, out: list[Match]) -> None:
    kind = m.lastgroup
    value = m.group()
    start, end = m.span()
    if kind == "order":
        out.append(Match(start, end, ORDER_ID, value))
    elif kind == "order17":
        if _after_label(_ORDER_LABEL, _ORDER_LABEL_ENDS, norm, start):
            out.append(Match(start, end, ORDER_ID, value))
    elif kind == "card":
        digits = value.replace(" ", "").replace("-", "")  # the only separators the branch allows
        if value[0] in "23456" and luhn_ok(digits) and not _after_label(_CODE_LABEL, _CODE_LABEL_ENDS, norm, start):
            out.append(Match(start, end, CARD, digits))
    elif kind == "ipv4":
        if all(len(p) == 1 or (p[0] != "0" and int(p) <= 255) for p in value.split(".")) and (
            not _after_label(_VERSION_LABEL, _VERSION_LABEL_ENDS, norm, start, 16)
        ):
            out.append(Match(start, end, IP, value))
    elif kind is not None:  # intl, jp, us
        digits = _only_digits(value)
        if kind == "intl":  # greedy groups may have taken a number that follows: give them back
            while not _phone_ok(kind, digits):
                cut = max(value.rfind(" "), value.rfind("-"), value.rfind("."))
                if cut <= 0:
                    break
                value = value[:cut].rstrip(" .-(")
                digits = _only_digits(value)
        if _phone_ok(kind, digits) and not _after_label(_CODE_LABEL, _CODE_LABEL_ENDS, norm, start):
            out.append(Match(start, start + len(value), PHONE, ("+" if kind == "intl" else "") + digits))


def _scan_digits(norm: str, out: list[Match]) -> None:
    for m in _DIGITS.finditer(norm):
        _classify(m, norm, out)


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
        value = norm[left:end]
        if value.count(":") < 2:
            continue
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            continue
        out.append(Match(left, end, IP, value.lower()))


def find_pii(text: str) -> list[Match]:
    """Every entity in ``text``, sorted, without overlaps (the longer of two overlapping wins)."""
    if len(text) < MIN_LEN:
        return []
    norm = _for_matching(text)
    found: list[Match] = []
    if "AKIA" in norm or "ASIA" in norm or "earer" in norm or "eyJ" in norm or "ecret" in norm or "ECRET" in norm:
        for m in _SECRETS.finditer(norm):
            g = m.lastgroup or 0
            found.append(Match(m.start(g), m.end(g), SECRET, m.group(g)))
    if "@" in norm:
        _scan_emails(norm, found)
    _scan_digits(norm, found)
    if ":" in norm:
        _scan_ipv6(norm, found)
    if len(found) < 2:
        return found
    found.sort(key=lambda x: (x.start, -x.end))  # at one start, the longest first
    kept = [found[0]]
    for item in found[1:]:
        if item.start >= kept[-1].end:
            kept.append(item)
    return kept


# What ``may_hold_pii`` looks for: where the digit scan could start an entity (its first
# character with the six that its look-ahead requires), written without look-arounds so that
# the engine skips in C to the first candidate.
_DIGIT_RUN = re.compile(f"{_FIRST}{_RUN}{{6}}")


def may_hold_pii(text: str) -> bool:
    """False only when ``find_pii(text)`` is certainly empty; a cheap test (~0.2-0.5 µs on the
    short ids, names and enum values most attribute values are) that lets the redactor skip
    ``find_pii`` (~1-2 µs even on a short clean string).

    It checks the gates ``find_pii`` itself scans behind, so it is a necessary condition by
    construction: on a text without full-width letters or digits the matching copy is ``text``
    itself, and then an e-mail needs an "@", an IPv6 address a ":" (the IPv6 gate is two colons),
    a secret one of the secret gates, and every entity of the digit scan a ``_FIRST`` character
    followed by six ``_RUN`` characters (the look-ahead ``_DIGITS`` demands at every start). Text
    with full-width letters or digits is folded before matching, which can create any of these,
    so it always may hold PII. ``tests/gateway/test_redactor.py`` checks the implication on the
    labeled corpus, every cut of it and random text.
    """
    if len(text) < MIN_LEN:
        return False
    if not text.isascii() and _FULLWIDTH_ALNUM.search(text) is not None:
        return True
    return (
        "@" in text
        or ":" in text
        or _DIGIT_RUN.search(text) is not None
        or "AKIA" in text
        or "ASIA" in text
        or "earer" in text
        or "eyJ" in text
        or "ecret" in text
        or "ECRET" in text
    )
