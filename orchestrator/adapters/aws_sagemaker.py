"""SageMaker endpoints through boto3 (``sagemaker-runtime`` ``invoke_endpoint``).

- intent classifier: a Hugging Face text-classification container; request
  ``{"inputs": message, "parameters": {"top_k": 1}}``, answer ``[{"label": ..., "score": ...}]``
  (a bare object is accepted too);
- reranker: a cross-encoder; request ``{"query": q, "documents": [...]}``, answer
  ``{"scores": [...]}`` (one per document) or ``{"results": [{"index": i, "relevance_score": s}]}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from orchestrator.adapters.aws_calls import RetryPolicy, make_client
from orchestrator.adapters.base import IntentPrediction, ProviderError
from orchestrator.routes import INTENTS


def _invoke(client: Any, retry: RetryPolicy, endpoint: str, payload: dict[str, Any]) -> tuple[Any, str]:
    response = retry.call(
        f"sagemaker {endpoint}",
        lambda: client.invoke_endpoint(
            EndpointName=endpoint,
            ContentType="application/json",
            Accept="application/json",
            Body=json.dumps(payload, ensure_ascii=False).encode(),
        ),
    )
    try:
        body = json.loads(response["Body"].read())
    except (KeyError, ValueError) as exc:
        raise ProviderError(f"sagemaker {endpoint}: response is not JSON ({exc!r})", "BadResponse") from exc
    return body, str(response.get("InvokedProductionVariant", ""))


def _endpoint_param(params: Mapping[str, str], model: str) -> str:
    endpoint = params.get("endpoint_name", "")
    if not re.fullmatch(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,62}", endpoint):  # SageMaker's endpoint-name rule
        raise ValueError(f"{model}: endpoint_name {endpoint!r} is not a SageMaker endpoint name")
    return endpoint


class SageMakerIntentClassifier:
    def __init__(
        self, client: Any, endpoint: str = "manga-intent-classifier", retry: RetryPolicy | None = None
    ) -> None:
        self._client = client
        self._endpoint = endpoint
        self._retry = retry or RetryPolicy()
        self.model_name = endpoint

    @classmethod
    def create(cls, region: str, timeout_s: float, max_attempts: int, endpoint: str) -> SageMakerIntentClassifier:
        return cls(make_client("sagemaker-runtime", region, timeout_s), endpoint, RetryPolicy(max_attempts))

    def configured(self, params: Mapping[str, str]) -> SageMakerIntentClassifier:
        """The classifier a bundle's ``manga-intent-classifier`` version names (its ``endpoint_name``),
        sharing this one's client and retry policy."""
        return SageMakerIntentClassifier(self._client, _endpoint_param(params, "manga-intent-classifier"), self._retry)

    def classify(self, message: str, page_type: str, locale: str) -> IntentPrediction:
        body, variant = _invoke(
            self._client, self._retry, self._endpoint, {"inputs": message, "parameters": {"top_k": 1}}
        )
        best = body[0] if isinstance(body, list) and body else body
        try:
            label, score = str(best["label"]), float(best["score"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(
                f"sagemaker {self._endpoint}: unexpected response shape ({exc!r})", "BadResponse"
            ) from exc
        if label not in INTENTS:
            raise ProviderError(f"sagemaker {self._endpoint}: unknown intent label {label!r}", "UnknownLabel")
        return IntentPrediction(label, score, variant or "unknown")


class SageMakerReranker:
    def __init__(self, client: Any, endpoint: str = "manga-reranker", retry: RetryPolicy | None = None) -> None:
        self._client = client
        self._endpoint = endpoint
        self._retry = retry or RetryPolicy()
        self.version = endpoint

    @classmethod
    def create(cls, region: str, timeout_s: float, max_attempts: int, endpoint: str) -> SageMakerReranker:
        return cls(make_client("sagemaker-runtime", region, timeout_s), endpoint, RetryPolicy(max_attempts))

    def configured(self, params: Mapping[str, str]) -> SageMakerReranker:
        """The reranker a bundle's ``manga-reranker`` version names (its ``endpoint_name``)."""
        return SageMakerReranker(self._client, _endpoint_param(params, "manga-reranker"), self._retry)

    def score(self, query: str, documents: list[str]) -> list[float]:
        if not documents:
            return []
        body, variant = _invoke(self._client, self._retry, self._endpoint, {"query": query, "documents": documents})
        if variant:
            self.version = f"{self._endpoint}/{variant}"
        try:
            if "scores" in body:
                scores = [float(s) for s in body["scores"]]
            else:
                scores = [0.0] * len(documents)
                for item in body["results"]:
                    scores[int(item["index"])] = float(item["relevance_score"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ProviderError(
                f"sagemaker {self._endpoint}: unexpected response shape ({exc!r})", "BadResponse"
            ) from exc
        if len(scores) != len(documents):
            raise ProviderError(
                f"sagemaker {self._endpoint}: {len(scores)} scores for {len(documents)} documents", "BadResponse"
            )
        return scores
