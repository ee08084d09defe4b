"""Redaction: what leaves the gateway carries no PII, and previews are capped.

This first version caps span inputs and outputs at ``MLFLOW_ARTIFACT_MAX_PREVIEW_CHARS``
(JSON text length) with a visible truncation marker. The PII detectors (e-mail, phone,
order id, card, IP, secrets) plug into ``Redactor.process`` in their own issue.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.config import RedactionConfig
from gateway.model import TraceRecord

TRUNCATION_MARKER = "…[truncated {n} chars]"


def cap_preview(value: Any, max_chars: int) -> Any:
    """``value`` unchanged when its JSON text fits, else that text cut with a marker."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
        if len(text) <= max_chars:
            return value
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
        if len(text) <= max_chars:
            return value
    return text[:max_chars] + TRUNCATION_MARKER.format(n=len(text) - max_chars)


class Redactor:
    """Caps previews (and, later, replaces PII); pure and synchronous."""

    name = "redact"
    drop_reason = None

    def __init__(self, config: RedactionConfig) -> None:
        self._max = config.max_preview_chars

    def process(self, traces: list[TraceRecord]) -> list[TraceRecord]:
        for trace in traces:
            for span in trace.spans:
                if span.inputs is not None:
                    span.inputs = cap_preview(span.inputs, self._max)
                if span.outputs is not None:
                    span.outputs = cap_preview(span.outputs, self._max)
        return traces
