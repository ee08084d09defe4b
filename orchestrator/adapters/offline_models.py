"""Offline, deterministic stand-ins for the SageMaker and Bedrock embedding models.

- :class:`HashingEmbedder`: feature hashing of word tokens and Japanese bigrams (crc32, signed)
  into a fixed-size, L2-normalised vector; stable across processes.
- :class:`KeywordIntentClassifier`: weighted English/Japanese cue phrases per intent, with the
  page type as a tie-breaker; confidence is the winner's share of the evidence.
- :class:`OverlapReranker`: query-term coverage of each document, title matches weighted up.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping

from orchestrator.adapters.base import IntentPrediction
from orchestrator.text import tokens


class HashingEmbedder:
    def __init__(self, dimensions: int = 256) -> None:
        self.dimensions = dimensions
        self.model_id = f"offline-hash-embed-v1-{dimensions}"

    def embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for token in tokens(text):
            h = zlib.crc32(token.encode())
            vector[h % self.dimensions] += 1.0 if (h >> 16) & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]


# intent: [(pattern, weight)]; patterns are matched on the lowercased message
_CUES: dict[str, list[tuple[str, float]]] = {
    "order_status": [
        (r"\bwhere is my\b", 3),
        (r"\bmy (order|package|parcel)\b", 3),
        (r"\btrack(ing)?\b", 2),
        (r"\b(hasn't|has not|didn't|did not|never) (arrive|come|ship)", 3),
        (r"\bdelivered\b", 2),
        (r"\border (status|number)\b", 3),
        (r"注文した", 3),
        (r"届(きません|かない|いていない)", 3),
        (r"配送状況", 3),
        (r"追跡", 2),
    ],
    "return_policy": [
        (r"\breturn", 3),
        (r"\brefund", 3),
        (r"\bdamaged\b", 2),
        (r"\bdefective\b", 2),
        (r"\bexchange\b", 2),
        (r"\bmisprint", 2),
        (r"返品", 3),
        (r"返金", 3),
        (r"破損", 2),
        (r"交換", 2),
        (r"落丁", 2),
    ],
    "faq": [
        (r"\bship(ping)?\b", 2),
        (r"\bpre-?orders?\b", 2),
        (r"\bpayment|\bpay with\b", 2),
        (r"\bgift ?wrap", 2),
        (r"\bdiscount\b", 2),
        (r"\binternational\b", 2),
        (r"\bcanada|\buk\b", 1),
        (r"\bcustomer support\b|\bcontact\b", 2),
        (r"\bpo box", 2),
        (r"\bcancel", 2),
        (r"\bcurrency\b", 1),
        (r"送料", 3),
        (r"予約", 2),
        (r"支払", 3),
        (r"海外", 2),
        (r"特典", 2),
        (r"キャンセル", 2),
    ],
    "recommendation": [
        (r"\brecommend", 3),
        (r"\bsuggest", 3),
        (r"\bsimilar\b", 2),
        (
            r"\bsomething (like|cozy|"
            r"fun|dark|new)",
            2,
        ),
        (r"\bwhat should i read\b", 3),
        (r"\b(manga|series) like\b", 3),
        (r"\bif i liked\b", 3),
        (r"\bfor a (teen|teenager|kid|beginner)", 2),
        (r"おすすめ", 3),
        (r"似た", 2),
        (r"好きな人", 2),
    ],
    "product_question": [
        (r"\bvol(ume)?\.? ?\d+|\bvolumes?\b", 2),
        (r"\bedition\b", 2),
        (r"\bhow much\b", 2),
        (r"\bprice\b", 2),
        (r"\bbox set\b", 2),
        (r"\bhardcover\b|\bdeluxe\b", 2),
        (r"\bin stock\b", 2),
        (r"\bwho (wrote|drew)\b|\bauthor\b", 2),
        (r"\bhow many\b", 1),
        (r"\bis (it|this|the)\b", 1),
        (r"巻", 2),
        (r"通常版|特装版", 2),
        (r"価格|いくら", 2),
        (r"全巻", 2),
    ],
    "small_talk": [
        (r"^(hi|hello|hey|yo)\b", 3),
        (r"\bthank(s| you)\b", 3),
        (r"\b(bye|goodbye)\b", 3),
        (r"\bhow are you\b", 3),
        (r"\bthat'?s all\b", 2),
        (r"こんにちは|こんばんは|おはよう", 3),
        (r"ありがとう", 3),
    ],
}
_COMPILED = {intent: [(re.compile(p), w) for p, w in cues] for intent, cues in _CUES.items()}
_PAGE_PRIOR = {"product": "product_question", "search": "recommendation", "category": "recommendation", "cart": "faq"}


class KeywordIntentClassifier:
    model_name = "offline-keyword-intent"
    model_version = "offline-keyword-intent-1"

    def __init__(self, page_prior: Mapping[str, str] | None = None) -> None:
        self.page_prior = dict(_PAGE_PRIOR if page_prior is None else page_prior)

    def configured(self, params: Mapping[str, str]) -> KeywordIntentClassifier:
        """This classifier as a bundle's ``manga-intent-classifier`` version configures it: the
        version must be this stand-in (``offline.model_id``); its page prior is read from the params."""
        _require_offline_id(params, self.model_version, "manga-intent-classifier")
        try:
            prior = json.loads(params.get("offline.page_prior", "null"))
        except ValueError:
            prior = None
        if not isinstance(prior, dict) or not all(v in _COMPILED for v in prior.values()):
            raise ValueError("manga-intent-classifier: offline.page_prior must map page types to known intents")
        return KeywordIntentClassifier(prior)

    def classify(self, message: str, page_type: str, locale: str) -> IntentPrediction:
        text = message.lower().strip()
        scores = {intent: sum(w for pattern, w in cues if pattern.search(text)) for intent, cues in _COMPILED.items()}
        prior = self.page_prior.get(page_type)
        if prior:
            scores[prior] += 0.5
        total = sum(scores.values())
        best = max(scores, key=lambda i: (scores[i], i == prior))
        if scores[best] < 1:  # no cue at all: a product-ish question on product pages, else general help
            return IntentPrediction(prior or "faq", 0.34, self.model_version)
        return IntentPrediction(best, round(scores[best] / total, 3), self.model_version)


def _require_offline_id(params: Mapping[str, str], shipped: str, model: str) -> None:
    pinned = params.get("offline.model_id")
    if pinned != shipped:
        raise ValueError(f"{model}: the bundle pins offline model {pinned!r}; this build ships {shipped!r}")


class OverlapReranker:
    version = "offline-overlap-reranker-1"

    def configured(self, params: Mapping[str, str]) -> OverlapReranker:
        """This reranker for a bundle's ``manga-reranker`` version (which must name this stand-in)."""
        _require_offline_id(params, self.version, "manga-reranker")
        return self

    def score(self, query: str, documents: list[str]) -> list[float]:
        q = set(tokens(query))
        if not q:
            return [0.0] * len(documents)
        out = []
        for doc in documents:
            title, _, body = doc.partition("\n")
            t, b = set(tokens(title)), set(tokens(body))
            out.append(round(0.6 * len(q & b) / len(q) + 0.4 * len(q & t) / len(q), 6))
        return out
