"""In-memory search over the corpus: BM25 keyword search and cosine vector search.

Both are pure and synchronous; ``VectorIndex`` embeds the corpus with whatever ``Embedder`` it
is given (the offline hashing embedder, or Titan through Bedrock), once, on first use.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence

from orchestrator.adapters.base import Embedder
from orchestrator.corpus import Document
from orchestrator.text import tokens

Filter = Callable[[Document], bool]


class BM25Index:
    """Okapi BM25 (k1=1.5, b=0.75) over title + text."""

    def __init__(self, documents: Sequence[Document], k1: float = 1.5, b: float = 0.75) -> None:
        self._docs = list(documents)
        self._tfs = [Counter(tokens(f"{d.title} {d.text}")) for d in self._docs]
        self._lens = [sum(tf.values()) for tf in self._tfs]
        self._avg = sum(self._lens) / max(1, len(self._lens))
        df: Counter[str] = Counter()
        for tf in self._tfs:
            df.update(tf.keys())
        n = len(self._docs)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self._k1, self._b = k1, b

    def search(self, query: str, k: int, accept: Filter | None = None) -> list[tuple[Document, float]]:
        terms = set(tokens(query))
        scored = []
        for doc, tf, length in zip(self._docs, self._tfs, self._lens, strict=True):
            if accept is not None and not accept(doc):
                continue
            score = 0.0
            for t in terms:
                f = tf.get(t)
                if f:
                    score += (
                        self._idf[t]
                        * f
                        * (self._k1 + 1)
                        / (f + self._k1 * (1 - self._b + self._b * length / self._avg))
                    )
            if score > 0:
                scored.append((doc, score))
        scored.sort(key=lambda pair: (-pair[1], pair[0].doc_id))
        return scored[:k]


class VectorIndex:
    """Exact cosine search (vectors are normalised, so a dot product)."""

    def __init__(self, documents: Sequence[Document], embedder: Embedder) -> None:
        self._docs = list(documents)
        self._embedder = embedder
        self._vectors: list[list[float]] | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> list[list[float]]:
        with self._lock:
            if self._vectors is None:
                self._vectors = [self._embedder.embed(f"{d.title}. {d.text}") for d in self._docs]
            return self._vectors

    def search(self, vector: Sequence[float], k: int, accept: Filter | None = None) -> list[tuple[Document, float]]:
        scored = []
        for doc, v in zip(self._docs, self._ensure(), strict=True):
            if accept is not None and not accept(doc):
                continue
            scored.append((doc, sum(a * b for a, b in zip(vector, v, strict=True))))
        scored.sort(key=lambda pair: (-pair[1], pair[0].doc_id))
        return scored[:k]
