"""Bedrock through boto3: generation with the Converse API and Titan text embeddings.

This is the only path to Bedrock; business code calls :class:`BedrockGenerator` /
:class:`BedrockEmbedder` through the ``Generator`` / ``Embedder`` interfaces, and the service
records the span attributes of spec §7 around the call.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.adapters.aws_calls import RetryPolicy, make_client
from orchestrator.adapters.base import Generation, GenerationRequest, ProviderError


class BedrockGenerator:
    """``bedrock-runtime`` ``converse``: one user turn, a system prompt, inference parameters."""

    provider = "bedrock"

    def __init__(self, client: Any, retry: RetryPolicy | None = None) -> None:
        self._client = client
        self._retry = retry or RetryPolicy()

    @classmethod
    def create(cls, region: str, timeout_s: float, max_attempts: int) -> BedrockGenerator:
        return cls(make_client("bedrock-runtime", region, timeout_s), RetryPolicy(max_attempts))

    def generate(self, request: GenerationRequest) -> Generation:
        response = self._retry.call(
            "bedrock converse",
            lambda: self._client.converse(
                modelId=request.model_id,
                system=[{"text": request.system}],
                messages=[{"role": "user", "content": [{"text": request.prompt}]}],
                inferenceConfig={"maxTokens": request.max_tokens, "temperature": request.temperature},
            ),
        )
        try:
            content = response["output"]["message"]["content"]
            text = "".join(block.get("text", "") for block in content)
            usage = response["usage"]
            latency = response.get("metrics", {}).get("latencyMs")
            return Generation(
                text=text,
                input_tokens=int(usage["inputTokens"]),
                output_tokens=int(usage["outputTokens"]),
                stop_reason=str(response["stopReason"]),
                model_latency_ms=float(latency) if latency is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(f"bedrock converse: unexpected response shape ({exc!r})", "BadResponse") from exc


class BedrockEmbedder:
    """``bedrock-runtime`` ``invoke_model`` on Titan Text Embeddings v2 (normalised vectors)."""

    def __init__(
        self,
        client: Any,
        model_id: str = "amazon.titan-embed-text-v2:0",
        dimensions: int = 256,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._client = client
        self.model_id = model_id
        self.dimensions = dimensions
        self._retry = retry or RetryPolicy()

    @classmethod
    def create(
        cls, region: str, timeout_s: float, max_attempts: int, model_id: str, dimensions: int
    ) -> BedrockEmbedder:
        return cls(make_client("bedrock-runtime", region, timeout_s), model_id, dimensions, RetryPolicy(max_attempts))

    def embed(self, text: str) -> list[float]:
        body = json.dumps({"inputText": text, "dimensions": self.dimensions, "normalize": True})
        response = self._retry.call(
            "bedrock invoke_model",
            lambda: self._client.invoke_model(
                modelId=self.model_id, body=body, contentType="application/json", accept="application/json"
            ),
        )
        try:
            payload = json.loads(response["body"].read())
            vector = [float(v) for v in payload["embedding"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(f"titan embedding: unexpected response shape ({exc!r})", "BadResponse") from exc
        if len(vector) != self.dimensions:
            raise ProviderError(f"titan embedding: {len(vector)} dimensions, expected {self.dimensions}", "BadResponse")
        return vector
