"""Retrieval (spec §8): embed, vector and keyword search, rerank; one traced span each.

``retrieve_chunks`` carries the retrieval contract: ``query_hash``, ``embedding_model``,
``filters``, ``candidate_count``, ``chunk_ids``, ``chunk_source_types``,
``reranker_version``, ``retriever_policy_version``, and the chunk snapshot as the JSON
attribute ``retrieval.snapshot`` = ``{trace_id, chunk_ids, source_types,
retriever_policy_version, chunks: [{chunk_id, source_type, lang, title, text}]}`` (the exact
payloads put in the prompt; the gateway redacts PII in them). Span attributes are not
preview-capped, so the snapshot can be read back from MLflow by trace id for replay.

A failing embedder or reranker degrades retrieval (keyword results only, or the fused order)
instead of failing the request; the failing child span records the error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clients import Tracer
from orchestrator.adapters.base import Embedder, ProviderError, Reranker, Route
from orchestrator.corpus import Document
from orchestrator.search_index import BM25Index, VectorIndex

RETRIEVER_POLICY_VERSION = "rag-v5"
SNAPSHOT_ATTRIBUTE = "retrieval.snapshot"


@dataclass(frozen=True, slots=True)
class Retrieval:
    chunks: tuple[Document, ...]
    candidate_count: int
    snapshot: dict[str, Any]


def query_hash(query: str) -> str:
    return hashlib.sha256(" ".join(query.lower().split()).encode()).hexdigest()[:16]


class Retriever:
    def __init__(
        self,
        tracer: Tracer,
        documents: Sequence[Document],
        embedder: Embedder,
        reranker: Reranker,
        candidates_k: int = 20,
        final_k: int = 4,
        policy_version: str = RETRIEVER_POLICY_VERSION,
    ) -> None:
        self._tracer = tracer
        self._docs = {d.doc_id: d for d in documents}
        self._embedder = embedder
        self._reranker = reranker
        self._keyword = BM25Index(documents)
        self._vector = VectorIndex(documents, embedder)
        self._k = candidates_k
        self._final_k = final_k
        self.policy_version = policy_version

    def warm_up(self) -> None:
        """Embed the corpus now rather than on the first request."""
        self._vector.search(self._embedder.embed("warm up"), 1)

    def retrieve(self, query: str, route: Route, product_id: str | None) -> Retrieval:
        tracer = self._tracer
        sources = frozenset(route.source_types)
        pinned = self._docs.get(product_id) if product_id else None
        filters: dict[str, Any] = {"source_types": sorted(sources) or "any"}
        if pinned is not None:
            filters["pinned_product"] = pinned.doc_id

        def accept(doc: Document) -> bool:
            return not sources or doc.source_type in sources

        with tracer.start_span(
            "retrieve_chunks",
            span_type="RETRIEVER",
            attributes={
                "query_hash": query_hash(query),
                "embedding_model": self._embedder.model_id,
                "filters": filters,
                "retriever_policy_version": self.policy_version,
            },
        ) as span:
            span.set_inputs({"query": query})
            vector: list[float] | None = None
            try:
                with tracer.start_span(
                    "embed_query",
                    span_type="EMBEDDING",
                    attributes={"embedding_model": self._embedder.model_id, "dimensions": self._embedder.dimensions},
                ):
                    vector = self._embedder.embed(query)
            except ProviderError:
                pass  # recorded on embed_query; keyword search still answers
            with tracer.start_span("vector_search", span_type="RETRIEVER", attributes={"k": self._k}) as vs:
                semantic = self._vector.search(vector, self._k, accept) if vector is not None else []
                vs.set_attributes(
                    {
                        "candidates": len(semantic),
                        "skipped": vector is None,
                        "top_score": round(semantic[0][1], 4) if semantic else 0.0,
                    }
                )
            with tracer.start_span(
                "keyword_search", span_type="RETRIEVER", attributes={"k": self._k, "algorithm": "bm25"}
            ) as ks:
                lexical = self._keyword.search(query, self._k, accept)
                ks.set_attributes(
                    {"candidates": len(lexical), "top_score": round(lexical[0][1], 4) if lexical else 0.0}
                )
            candidates = _fuse([d for d, _ in semantic], [d for d, _ in lexical])
            chunks = self._rerank(query, candidates, pinned, route.max_chunks_per_series)
            ids = [d.doc_id for d in chunks]
            types = [d.source_type for d in chunks]
            snapshot = {
                "trace_id": span.trace_id,
                "chunk_ids": ids,
                "source_types": types,
                "retriever_policy_version": self.policy_version,
                "query_hash": query_hash(query),
                "chunks": [d.payload() for d in chunks],
            }
            span.set_attributes(
                {
                    "candidate_count": len(candidates),
                    "chunk_ids": ids,
                    "chunk_source_types": types,
                    "reranker_version": self._reranker.version,
                    SNAPSHOT_ATTRIBUTE: snapshot,
                }
            )
            span.set_outputs({"chunk_ids": ids})
        return Retrieval(tuple(chunks), len(candidates), snapshot)

    def _rerank(
        self, query: str, candidates: list[Document], pinned: Document | None, per_series: int
    ) -> list[Document]:
        with self._tracer.start_span(
            "rerank_chunks",
            span_type="RERANKER",
            attributes={"reranker_model_version": self._reranker.version, "candidates_in": len(candidates)},
        ) as span:
            try:
                scores = self._reranker.score(query, [f"{d.title}\n{d.text}" for d in candidates])
                order = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))
                ranked = [candidates[i] for i in order]
                span.set_attribute("top_score", round(scores[order[0]], 4) if order else 0.0)
            except ProviderError as exc:
                ranked = candidates  # fused order; the error stays visible on this span
                span.set_attributes({"degraded": True, "error_code": exc.code})
            kept, per = [], dict[str, int]()
            for doc in ranked:
                if doc.series_id and per.get(doc.series_id, 0) >= per_series:
                    continue
                per[doc.series_id] = per.get(doc.series_id, 0) + 1
                kept.append(doc)
                if len(kept) == self._final_k:
                    break
            if pinned is not None and pinned not in kept:
                kept = [pinned, *kept[: self._final_k - 1]]
            span.set_attributes({"kept": len(kept), "reranker_model_version": self._reranker.version})
        return kept


def _fuse(*rankings: list[Document], k: int = 60) -> list[Document]:
    """Reciprocal rank fusion of the candidate lists."""
    scores: dict[str, float] = {}
    docs: dict[str, Document] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking):
            scores[doc.doc_id] = scores.get(doc.doc_id, 0.0) + 1.0 / (k + rank + 1)
            docs[doc.doc_id] = doc
    return [docs[i] for i in sorted(scores, key=lambda i: (-scores[i], i))]
