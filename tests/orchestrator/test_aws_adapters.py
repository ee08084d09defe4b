"""The AWS adapters against botocore's Stubber: the exact requests they send, the parsing of
real response shapes, and what throttling and service errors turn into. No network, no
credentials: clients get dummy keys and the Stubber answers every call."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from orchestrator.adapters.aws_appconfig import AppConfigRoutes
from orchestrator.adapters.aws_bedrock import BedrockEmbedder, BedrockGenerator
from orchestrator.adapters.aws_calls import RetryPolicy
from orchestrator.adapters.aws_sagemaker import SageMakerIntentClassifier, SageMakerReranker
from orchestrator.adapters.base import GenerationRequest, ProviderError, ProviderThrottled
from orchestrator.routes import DEFAULT_DOCUMENT
from tests.fakes import FakeClock

HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"


def client(service: str) -> Any:
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def body(payload: Any) -> StreamingBody:
    raw = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
    return StreamingBody(io.BytesIO(raw), len(raw))


class Sleeps:
    """Records the pauses a RetryPolicy asks for instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def retry(sleeps: Sleeps) -> RetryPolicy:
    return RetryPolicy(max_attempts=3, initial_s=0.2, max_s=2.0, sleep=sleeps)


@pytest.fixture
def bedrock() -> Iterator[tuple[Any, Stubber]]:
    c = client("bedrock-runtime")
    with Stubber(c) as stub:
        yield c, stub
        stub.assert_no_pending_responses()


CONVERSE_RESPONSE = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Vol. 107 is $9.99 [product_one-piece_v107]"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 812, "outputTokens": 23, "totalTokens": 835},
    "metrics": {"latencyMs": 640},
}
GEN_REQUEST = GenerationRequest(
    model_id=HAIKU, system="You are MangaAssist.", prompt="<question>price?</question>", temperature=0.1, max_tokens=400
)
EXPECTED_CONVERSE = {
    "modelId": HAIKU,
    "system": [{"text": "You are MangaAssist."}],
    "messages": [{"role": "user", "content": [{"text": "<question>price?</question>"}]}],
    "inferenceConfig": {"maxTokens": 400, "temperature": 0.1},
}


def test_converse_request_and_response(bedrock: tuple[Any, Stubber], retry: RetryPolicy) -> None:
    c, stub = bedrock
    stub.add_response("converse", CONVERSE_RESPONSE, EXPECTED_CONVERSE)
    gen = BedrockGenerator(c, retry).generate(GEN_REQUEST)
    assert gen.text == "Vol. 107 is $9.99 [product_one-piece_v107]"
    assert (gen.input_tokens, gen.output_tokens, gen.stop_reason, gen.model_latency_ms) == (812, 23, "end_turn", 640)


def test_converse_retries_throttling_then_succeeds(
    bedrock: tuple[Any, Stubber], retry: RetryPolicy, sleeps: Sleeps
) -> None:
    c, stub = bedrock
    stub.add_client_error(
        "converse", "ThrottlingException", "Too many requests", 429, expected_params=EXPECTED_CONVERSE
    )
    stub.add_response("converse", CONVERSE_RESPONSE, EXPECTED_CONVERSE)
    assert BedrockGenerator(c, retry).generate(GEN_REQUEST).output_tokens == 23
    assert len(sleeps.delays) == 1 and 0.1 <= sleeps.delays[0] <= 0.2


def test_converse_throttled_on_every_attempt_raises_throttled(
    bedrock: tuple[Any, Stubber], retry: RetryPolicy, sleeps: Sleeps
) -> None:
    c, stub = bedrock
    for _ in range(3):
        stub.add_client_error("converse", "ThrottlingException", "Too many requests", 429)
    with pytest.raises(ProviderThrottled) as info:
        BedrockGenerator(c, retry).generate(GEN_REQUEST)
    assert info.value.code == "ThrottlingException"
    assert "Too many requests" in str(info.value)
    assert len(sleeps.delays) == 2  # three attempts, two pauses, growing
    assert sleeps.delays[0] <= 0.2 and 0.2 <= sleeps.delays[1] <= 0.4


def test_converse_validation_error_is_permanent(
    bedrock: tuple[Any, Stubber], retry: RetryPolicy, sleeps: Sleeps
) -> None:
    c, stub = bedrock
    stub.add_client_error("converse", "ValidationException", "The provided model identifier is invalid.", 400)
    with pytest.raises(ProviderError) as info:
        BedrockGenerator(c, retry).generate(GEN_REQUEST)
    assert not isinstance(info.value, ProviderThrottled)
    assert info.value.code == "ValidationException" and sleeps.delays == []


def test_converse_joins_text_blocks(bedrock: tuple[Any, Stubber], retry: RetryPolicy) -> None:
    c, stub = bedrock
    two_blocks = {
        **CONVERSE_RESPONSE,
        "stopReason": "max_tokens",
        "output": {"message": {"role": "assistant", "content": [{"text": "Yes. "}, {"text": "It ships."}]}},
    }
    stub.add_response("converse", two_blocks)
    gen = BedrockGenerator(c, retry).generate(GEN_REQUEST)
    assert (gen.text, gen.stop_reason) == ("Yes. It ships.", "max_tokens")


def test_titan_embedding_request_and_response(bedrock: tuple[Any, Stubber], retry: RetryPolicy) -> None:
    c, stub = bedrock
    vector = [0.5, -0.5, 0.5, -0.5]
    # the exact body Titan Text Embeddings v2 expects
    expected_body = json.dumps({"inputText": "ワンピース 107巻", "dimensions": 4, "normalize": True})
    stub.add_response(
        "invoke_model",
        {"body": body({"embedding": vector, "inputTextTokenCount": 6}), "contentType": "application/json"},
        {
            "modelId": "amazon.titan-embed-text-v2:0",
            "contentType": "application/json",
            "accept": "application/json",
            "body": expected_body,
        },
    )
    embedder = BedrockEmbedder(c, "amazon.titan-embed-text-v2:0", 4, retry)
    assert embedder.embed("ワンピース 107巻") == vector


def test_titan_wrong_dimensions_and_throttling(bedrock: tuple[Any, Stubber], retry: RetryPolicy) -> None:
    c, stub = bedrock
    stub.add_response("invoke_model", {"body": body({"embedding": [1.0, 0.0, 0.0]}), "contentType": "x"})
    embedder = BedrockEmbedder(c, "amazon.titan-embed-text-v2:0", 4, retry)
    with pytest.raises(ProviderError, match="3 dimensions, expected 4"):
        embedder.embed("x")
    for _ in range(3):
        stub.add_client_error("invoke_model", "ThrottlingException", "Rate exceeded", 429)
    with pytest.raises(ProviderThrottled):
        embedder.embed("x")


@pytest.fixture
def sagemaker() -> Iterator[tuple[Any, Stubber]]:
    c = client("sagemaker-runtime")
    with Stubber(c) as stub:
        yield c, stub
        stub.assert_no_pending_responses()


def test_intent_classifier_request_and_hf_response(sagemaker: tuple[Any, Stubber], retry: RetryPolicy) -> None:
    c, stub = sagemaker
    stub.add_response(
        "invoke_endpoint",
        {
            "Body": body([{"label": "recommendation", "score": 0.91}]),
            "ContentType": "application/json",
            "InvokedProductionVariant": "intent-v7",
        },
        {
            "EndpointName": "manga-intent-classifier",
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": json.dumps(
                {"inputs": "おすすめの漫画は？", "parameters": {"top_k": 1}}, ensure_ascii=False
            ).encode(),
        },
    )
    prediction = SageMakerIntentClassifier(c, "manga-intent-classifier", retry).classify(
        "おすすめの漫画は？", "search", "ja-JP"
    )
    assert (prediction.intent, prediction.confidence, prediction.model_version) == ("recommendation", 0.91, "intent-v7")


def test_intent_classifier_rejects_unknown_label_and_errors(
    sagemaker: tuple[Any, Stubber], retry: RetryPolicy, sleeps: Sleeps
) -> None:
    c, stub = sagemaker
    classifier = SageMakerIntentClassifier(c, "manga-intent-classifier", retry)
    stub.add_response("invoke_endpoint", {"Body": body({"label": "weather", "score": 0.99})})
    with pytest.raises(ProviderError, match="unknown intent label 'weather'"):
        classifier.classify("is it raining", "search", "en-US")
    stub.add_client_error("invoke_endpoint", "ModelError", "Received server error (500) from primary", 424)
    with pytest.raises(ProviderError) as info:
        classifier.classify("hi", "search", "en-US")
    assert info.value.code == "ModelError" and sleeps.delays == []  # model errors are not retried


def test_reranker_both_response_shapes(sagemaker: tuple[Any, Stubber], retry: RetryPolicy) -> None:
    c, stub = sagemaker
    docs = ["One Piece, Vol. 1", "Naruto, Vol. 1", "Shipping policy"]
    stub.add_response(
        "invoke_endpoint",
        {"Body": body({"scores": [0.2, 0.9, 0.1]}), "InvokedProductionVariant": "rr-4"},
        {
            "EndpointName": "manga-reranker",
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": json.dumps({"query": "naruto", "documents": docs}).encode(),
        },
    )
    reranker = SageMakerReranker(c, "manga-reranker", retry)
    assert reranker.score("naruto", docs) == [0.2, 0.9, 0.1]
    assert reranker.version == "manga-reranker/rr-4"
    stub.add_response(
        "invoke_endpoint",
        {
            "Body": body(
                {
                    "results": [
                        {"index": 2, "relevance_score": 0.7},
                        {"index": 0, "relevance_score": 0.3},
                        {"index": 1, "relevance_score": 0.1},
                    ]
                }
            )
        },
    )
    assert reranker.score("ship", docs) == [0.3, 0.1, 0.7]
    stub.add_response("invoke_endpoint", {"Body": body({"scores": [0.5]})})
    with pytest.raises(ProviderError, match="1 scores for 3 documents"):
        reranker.score("x", docs)
    assert reranker.score("x", []) == []  # nothing to rank: no call


def test_reranker_throttled_then_recovers(sagemaker: tuple[Any, Stubber], retry: RetryPolicy, sleeps: Sleeps) -> None:
    c, stub = sagemaker
    stub.add_client_error("invoke_endpoint", "ThrottlingException", "Rate exceeded", 400)
    stub.add_client_error("invoke_endpoint", "ServiceUnavailable", "busy", 503)
    stub.add_response("invoke_endpoint", {"Body": body({"scores": [1.0]})})
    assert SageMakerReranker(c, "manga-reranker", retry).score("q", ["d"]) == [1.0]
    assert len(sleeps.delays) == 2


ROUTES = {**DEFAULT_DOCUMENT, "release_bundle": "2026.12.01-rc2", "version": "routes-14"}


def test_appconfig_session_poll_and_interval(retry: RetryPolicy) -> None:
    c = client("appconfigdata")
    clock = FakeClock(1000.0)
    routes = AppConfigRoutes(c, "mangaassist", "prod", "routes", HAIKU, "fallback-bundle", retry, clock)
    with Stubber(c) as stub:
        stub.add_response(
            "start_configuration_session",
            {"InitialConfigurationToken": "tok-0"},
            {
                "ApplicationIdentifier": "mangaassist",
                "EnvironmentIdentifier": "prod",
                "ConfigurationProfileIdentifier": "routes",
                "RequiredMinimumPollIntervalInSeconds": 15,
            },
        )
        stub.add_response(
            "get_latest_configuration",
            {
                "NextPollConfigurationToken": "tok-1",
                "NextPollIntervalInSeconds": 30,
                "ContentType": "application/json",
                "Configuration": body(ROUTES),
            },
            {"ConfigurationToken": "tok-0"},
        )
        table = routes.current()
        assert table.release_bundle == "2026.12.01-rc2" and table.config_version == "routes-14"
        assert table.route_for("recommendation").prompt_version == "recommendation-2.4"
        assert table.route_for("recommendation").model_id == HAIKU
        assert not table.route_for("order_status").uses_bedrock
        clock.now += 29
        assert routes.current() is table  # inside the poll interval: no call (the Stubber would fail)
        clock.now += 2
        stub.add_response(
            "get_latest_configuration",  # empty body: unchanged
            {"NextPollConfigurationToken": "tok-2", "NextPollIntervalInSeconds": 30, "Configuration": body(b"")},
            {"ConfigurationToken": "tok-1"},
        )
        assert routes.current() is table
        clock.now += 31
        stub.add_client_error("get_latest_configuration", "ThrottlingException", "slow down", 429)
        stub.add_client_error("get_latest_configuration", "ThrottlingException", "slow down", 429)
        stub.add_client_error("get_latest_configuration", "ThrottlingException", "slow down", 429)
        assert routes.current() is table  # poll failed: the last good table keeps serving
        stub.assert_no_pending_responses()


def test_appconfig_invalid_or_missing_config_raises(retry: RetryPolicy) -> None:
    c = client("appconfigdata")
    bad = {"routes": {"recommendation": {"uses_bedrock": True}}}
    with Stubber(c) as stub:
        stub.add_response("start_configuration_session", {"InitialConfigurationToken": "t0"})
        stub.add_response(
            "get_latest_configuration",
            {"NextPollConfigurationToken": "t1", "NextPollIntervalInSeconds": 15, "Configuration": body(bad)},
        )
        routes = AppConfigRoutes(c, "a", "e", "p", HAIKU, "b", retry, FakeClock(1000.0))
        with pytest.raises(ProviderError) as info:
            routes.current()
        assert info.value.code == "BadConfiguration"
        assert "routes.recommendation.prompt_version is required" in str(info.value)
        assert "routes missing for intents" in str(info.value)
    c2 = client("appconfigdata")
    with Stubber(c2) as stub:
        stub.add_client_error("start_configuration_session", "ResourceNotFoundException", "no such profile", 404)
        with pytest.raises(ProviderError) as info:
            AppConfigRoutes(c2, "a", "e", "p", HAIKU, "b", retry, FakeClock(1000.0)).current()
        assert info.value.code == "ResourceNotFoundException"
