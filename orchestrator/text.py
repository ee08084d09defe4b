"""Tokenising English and Japanese text the same way for search, embeddings and grounding.

Latin words are lowercased (``vol.`` and ``107`` are tokens too); runs of kanji and katakana
become overlapping character bigrams (a single character stays a unigram), the usual trick
when there is no word segmenter; hiragana runs (mostly particles and endings) are dropped.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*|[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]+")
_CONTENT = re.compile(r"[\u30a0-\u30ff\u3400-\u9fff\uff66-\uff9f]+")  # katakana and kanji
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]")
STOPWORDS = frozenset(
    (
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "please",
        "so",
        "that",
        "the",
        "their",
        "them",
        "there",
        "these",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "will",
        "with",
        "you",
        "your",
        "any",
        "about",
        "into",
        "than",
        "then",
        "just",
        "also",
    )
)


def tokens(text: str, drop_stopwords: bool = True) -> list[str]:
    out: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        word = match.group()
        if _CJK.match(word):
            for run in _CONTENT.findall(word):
                out.extend(run[i : i + 2] for i in range(max(1, len(run) - 1)))
        elif not drop_stopwords or word not in STOPWORDS:
            out.append(word)
    return out


def is_japanese(text: str) -> bool:
    return bool(_CJK.search(text))


NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers(text: str) -> set[str]:
    """Numbers mentioned in ``text``, thousands separators removed (``3,500`` → ``3500``)."""
    return {n.replace(",", "") for n in NUMBER.findall(text)}
