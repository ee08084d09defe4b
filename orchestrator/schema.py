"""The values the chat service takes and returns (independent of the HTTP layer).

``ChatResponse`` carries the response contract of spec §10: ``response_id``, ``trace_id``
(32-hex, MLflow shows ``tr-<trace_id>``), ``prompt_version``, ``release_bundle``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

PAGE_TYPES = ("product", "search", "category", "cart")
USER_TYPES = ("guest", "signed_in", "prime")


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


def new_response_id() -> str:
    return "resp_" + uuid.uuid4().hex[:26]


@dataclass(frozen=True, slots=True)
class PageContext:
    page_type: str
    locale: str = "en-US"
    product_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    session_id: str
    message: str
    page_context: PageContext
    user_type: str = "guest"
    request_id: str = field(default_factory=new_request_id)


@dataclass(frozen=True, slots=True)
class ChatResponse:
    reply: str
    response_id: str
    trace_id: str
    prompt_version: str
    release_bundle: str
    request_id: str
    intent: str
    cache_hit: bool
    citations: tuple[str, ...]
    guardrail_action: str
    """``none``, ``redact`` or ``block`` (the reply is then the safe fallback)."""
