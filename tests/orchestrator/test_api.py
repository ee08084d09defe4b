"""The HTTP contract: 4xx responses name the bad field; the response contract of spec §10."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clients import Tracer
from orchestrator.adapters import offline_providers
from orchestrator.api import create_app
from orchestrator.service import ChatService

GOOD = {
    "session_id": "sess-1",
    "message": "Do you ship manga to Canada?",
    "page_context": {"page_type": "search", "locale": "en-US"},
    "user_type": "prime",
}


@pytest.fixture
def api(offline_tracer: Tracer) -> Iterator[TestClient]:
    with TestClient(create_app(ChatService(offline_tracer, offline_providers()))) as client:
        yield client


def fields(response: Any) -> list[str]:
    return [f["field"] for f in response.json()["fields"]]


def test_chat_answers_with_the_response_contract(api: TestClient) -> None:
    r = api.post("/v1/chat", json=GOOD)
    assert r.status_code == 200
    body = r.json()
    assert body["intent"] == "faq" and body["prompt_version"] == "faq-2.0"
    assert body["release_bundle"] == "2026.11.20-rc1" and body["response_id"].startswith("resp_")
    assert len(body["trace_id"]) == 32 and int(body["trace_id"], 16)
    assert "Canada" in body["reply"] and body["citations"] and body["cache_hit"] is False
    assert api.post("/v1/chat", json=GOOD).json()["cache_hit"] is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"page_context": {"page_type": "home", "locale": "en-US"}}, "page_context.page_type"),
        ({"page_context": {"page_type": "cart", "locale": "english"}}, "page_context.locale"),
        ({"message": "   "}, "message"),
        ({"message": "x" * 2001}, "message"),
        ({"user_type": "admin"}, "user_type"),
        ({"session_id": ""}, "session_id"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_chat_fields_are_named(api: TestClient, change: dict[str, Any], field: str) -> None:
    r = api.post("/v1/chat", json={**GOOD, **change})
    assert r.status_code == 422
    assert fields(r) == [field]
    assert field in r.json()["error"]


def test_missing_fields_and_non_json(api: TestClient) -> None:
    r = api.post("/v1/chat", json={"message": "hi"})
    assert r.status_code == 422 and sorted(fields(r)) == ["page_context", "session_id"]
    r = api.post("/v1/chat", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "invalid request" in r.json()["error"]


def test_feedback_validation_and_trace_match(api: TestClient) -> None:
    chat = api.post("/v1/chat", json=GOOD).json()
    ok = {"response_id": chat["response_id"], "trace_id": chat["trace_id"], "feedback": "thumbs_up"}
    r = api.post("/v1/feedback", json=ok)
    assert r.status_code == 202 and r.json()["accepted"] is True and r.json()["event_id"].startswith("fb_")
    r = api.post("/v1/feedback", json={**ok, "feedback": "meh"})
    assert r.status_code == 422 and fields(r) == ["feedback"]
    r = api.post("/v1/feedback", json={**ok, "trace_id": "tr-123"})
    assert r.status_code == 422 and fields(r) == ["trace_id"]
    r = api.post("/v1/feedback", json={**ok, "trace_id": "f" * 32})  # well-formed, but not this response's trace
    assert r.status_code == 422 and fields(r) == ["trace_id"] and "does not match" in r.json()["error"]
    r = api.post("/v1/feedback", json={**ok, "timestamp": "yesterday"})
    assert r.status_code == 422 and fields(r) == ["timestamp"]


def test_feedback_the_gateway_would_reject_is_rejected_here(api: TestClient) -> None:
    chat = api.post("/v1/chat", json=GOOD).json()
    ok = {"response_id": chat["response_id"], "trace_id": chat["trace_id"], "feedback": "thumbs_down"}
    for change, field in [
        ({"reason_code": "abc"}, "reason_code"),
        ({"timestamp": "1960-01-01T00:00:00Z"}, "timestamp"),
        ({"timestamp": "9999-12-31T00:00:00Z"}, "timestamp"),
        ({"trace_id": "0" * 32}, "trace_id"),
        ({"session_id": "s" * 200}, "session_id"),
    ]:
        r = api.post("/v1/feedback", json={**ok, **change})
        assert r.status_code == 422 and fields(r) == [field], (change, r.json())
    r = api.post("/v1/feedback", json={**ok, "reason_code": "not_grounded"})
    assert r.status_code == 202


def test_a_retried_feedback_post_is_the_same_event(api: TestClient) -> None:
    chat = api.post("/v1/chat", json=GOOD).json()
    ok = {"response_id": chat["response_id"], "trace_id": chat["trace_id"], "feedback": "thumbs_down"}
    first, retry = api.post("/v1/feedback", json=ok).json(), api.post("/v1/feedback", json=ok).json()
    assert first["event_id"] == retry["event_id"]
    changed = api.post("/v1/feedback", json={**ok, "feedback": "thumbs_up"}).json()
    assert changed["event_id"] != first["event_id"]  # a change of mind is another event
    given = api.post("/v1/feedback", json={**ok, "event_id": "click-42"}).json()
    assert given["event_id"] == "click-42"


def test_health(api: TestClient) -> None:
    r = api.get("/healthz")
    assert r.status_code == 200 and r.json()["providers"] == "offline"


def test_a_body_over_the_limit_is_refused_before_it_is_read(offline_tracer: Tracer) -> None:
    app = create_app(ChatService(offline_tracer, offline_providers()), max_body_bytes=4096)
    with TestClient(app) as client:
        big = {**GOOD, "message": "x" * 10_000}
        r = client.post("/v1/chat", json=big)
        assert r.status_code == 413 and "4096" in r.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"session_id": "s1", "message": "'
            for _ in range(100):
                yield b"y" * 100
            yield b'"}'

        r = client.post("/v1/chat", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        small = json.dumps(GOOD).encode()

        def one_chunk() -> Iterator[bytes]:
            yield small

        r = client.post("/v1/chat", content=one_chunk(), headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert client.post("/v1/chat", json=GOOD).status_code == 200
