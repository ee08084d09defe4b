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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clients import Tracer
from orchestrator.adapters.base import Embedder, ProviderError, Reranker, Route
from orchestrator.corpus import Document
from orchestrator.search_index import BM25Index, VectorIndex

RETRIEVER_POLICY_VERSION = "rag-v5"
SNAPSHOT_ATTRIBUTE = "retrieval.snapshot"


class PolicyError(ValueError):
    """A retriever policy's params cannot be served; the message names each bad param."""


@dataclass(frozen=True, slots=True)
class RetrievalPolicy:
    """What retrieval reads besides a route's own filters (``source_types``, ``uses_retrieval``,
    ``max_chunks_per_series``, which travel in the route table).

    ``RetrievalPolicy()`` is the shipped policy; a release bundle's retriever policy (registered
    model ``mangaassist-rag-policy``) is built from its params by :meth:`from_params`."""

    version: str = RETRIEVER_POLICY_VERSION
    candidates_k: int = 20
    """Candidates each of vector and keyword search returns before fusion."""
    final_k: int = 4
    """Chunks kept after reranking (and put in the prompt)."""
    fusion_k: int = 60
    """Reciprocal-rank-fusion constant."""
    rerank: bool = True
    """``False``: the fused order is kept and the reranker is not called."""
    min_score: float | None = None
    """Reranked chunks scoring below this are dropped (a pinned product page is kept); ``None``: no floor."""

    def params(self) -> dict[str, str]:
        return {
            "policy_version": self.version,
            "candidates_k": str(self.candidates_k),
            "final_k": str(self.final_k),
            "fusion": "reciprocal_rank",
            "fusion_k": str(self.fusion_k),
            "reranker": "on" if self.rerank else "off",
            "min_score": "none" if self.min_score is None else str(self.min_score),
        }

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> RetrievalPolicy:
        problems: list[str] = []

        def integer(key: str, low: int, high: int) -> int:
            try:
                value = int(params[key])
            except (KeyError, ValueError):
                problems.append(f"{key} must be an integer")
                return low
            if not low <= value <= high:
                problems.append(f"{key}={value} is outside [{low}, {high}]")
            return value

        candidates_k, final_k = integer("candidates_k", 1, 200), integer("final_k", 1, 20)
        fusion_k = integer("fusion_k", 1, 1000)
        if final_k > candidates_k:
            problems.append(f"final_k={final_k} exceeds candidates_k={candidates_k}")
        if params.get("fusion") != "reciprocal_rank":
            problems.append(f"fusion={params.get('fusion')!r}: this build fuses by reciprocal_rank only")
        rerank = params.get("reranker")
        if rerank not in ("on", "off"):
            problems.append(f"reranker={rerank!r} must be on or off")
        raw_min = params.get("min_score", "none")
        min_score: float | None = None
        if raw_min != "none":
            try:
                min_score = float(raw_min)
            except ValueError:
                problems.append(f"min_score={raw_min!r} must be a number or none")
        version = params.get("policy_version", "")
        if not version:
            problems.append("policy_version is missing")
        if problems:
            raise PolicyError("retriever policy: " + "; ".join(problems))
        return cls(version, candidates_k, final_k, fusion_k, rerank == "on", min_score)


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
        policy: RetrievalPolicy | None = None,
    ) -> None:
        self._tracer = tracer
        self._docs = {d.doc_id: d for d in documents}
        self._embedder = embedder
        self._reranker = reranker
        self._keyword = BM25Index(documents)
        self._vector = VectorIndex(documents, embedder)
        self.policy = policy or RetrievalPolicy()

    def warm_up(self) -> None:
        """Embed the corpus now rather than on the first request."""
        self._vector.search(self._embedder.embed("warm up"), 1)

    def retrieve(
        self,
        query: str,
        route: Route,
        product_id: str | None,
        policy: RetrievalPolicy | None = None,
        reranker: Reranker | None = None,
    ) -> Retrieval:
        """Retrieve for ``route`` under ``policy`` (default: this retriever's) with ``reranker``
        (default: the provider's); a served bundle passes its own of both."""
        tracer = self._tracer
        policy = policy or self.policy
        reranker = reranker or self._reranker
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
                "retriever_policy_version": policy.version,
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
            with tracer.start_span("vector_search", span_type="RETRIEVER", attributes={"k": policy.candidates_k}) as vs:
                semantic = self._vector.search(vector, policy.candidates_k, accept) if vector is not None else []
                vs.set_attributes(
                    {
                        "candidates": len(semantic),
                        "skipped": vector is None,
                        "top_score": round(semantic[0][1], 4) if semantic else 0.0,
                    }
                )
            with tracer.start_span(
                "keyword_search", span_type="RETRIEVER", attributes={"k": policy.candidates_k, "algorithm": "bm25"}
            ) as ks:
                lexical = self._keyword.search(query, policy.candidates_k, accept)
                ks.set_attributes(
                    {"candidates": len(lexical), "top_score": round(lexical[0][1], 4) if lexical else 0.0}
                )
            candidates = _fuse([d for d, _ in semantic], [d for d, _ in lexical], k=policy.fusion_k)
            chunks = self._rerank(query, candidates, pinned, route.max_chunks_per_series, policy, reranker)
            ids = [d.doc_id for d in chunks]
            types = [d.source_type for d in chunks]
            snapshot = {
                "trace_id": span.trace_id,
                "chunk_ids": ids,
                "source_types": types,
                "retriever_policy_version": policy.version,
                "query_hash": query_hash(query),
                "chunks": [d.payload() for d in chunks],
            }
            span.set_attributes(
                {
                    "candidate_count": len(candidates),
                    "chunk_ids": ids,
                    "chunk_source_types": types,
                    "reranker_version": reranker.version if policy.rerank else "off",
                    SNAPSHOT_ATTRIBUTE: snapshot,
                }
            )
            span.set_outputs({"chunk_ids": ids})
        return Retrieval(tuple(chunks), len(candidates), snapshot)

    def _rerank(
        self,
        query: str,
        candidates: list[Document],
        pinned: Document | None,
        per_series: int,
        policy: RetrievalPolicy,
        reranker: Reranker,
    ) -> list[Document]:
        final_k = policy.final_k
        with self._tracer.start_span(
            "rerank_chunks",
            span_type="RERANKER",
            attributes={
                "reranker_model_version": reranker.version if policy.rerank else "off",
                "candidates_in": len(candidates),
            },
        ) as span:
            ranked = candidates  # fused order, unless the policy reranks and the reranker answers
            if policy.rerank:
                try:
                    scores = reranker.score(query, [f"{d.title}\n{d.text}" for d in candidates])
                    order = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))
                    if policy.min_score is not None:
                        floor = policy.min_score
                        order = [i for i in order if scores[i] >= floor]
                        span.set_attribute("below_min_score", len(candidates) - len(order))
                    ranked = [candidates[i] for i in order]
                    span.set_attribute("top_score", round(scores[order[0]], 4) if order else 0.0)
                except ProviderError as exc:
                    span.set_attributes({"degraded": True, "error_code": exc.code})  # the error stays visible
            else:
                span.set_attribute("skipped", "retriever policy: reranker off")
            kept, per = [], dict[str, int]()
            for doc in ranked:
                if doc.series_id and per.get(doc.series_id, 0) >= per_series:
                    continue
                per[doc.series_id] = per.get(doc.series_id, 0) + 1
                kept.append(doc)
                if len(kept) == final_k:
                    break
            if pinned is not None and pinned not in kept:
                kept = [pinned, *kept[: final_k - 1]]
            span.set_attribute("kept", len(kept))
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
