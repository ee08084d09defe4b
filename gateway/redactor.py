"""Redaction: what leaves the gateway carries no PII, and previews are capped.

``Redactor`` is the pipeline stage (pure, synchronous). For every span it replaces the PII
that ``gateway.pii`` finds in every string that leaves the gateway:

- inputs and outputs, recursively through JSON values (dict values, list items; keys stay),
  redacted first and then capped at ``MLFLOW_ARTIFACT_MAX_PREVIEW_CHARS`` with a visible
  truncation marker, so a cut can never leave half an e-mail behind;
- attribute values (strings, and strings inside lists and dicts), event attribute values
  (``exception.message``, ``exception.stacktrace``, …), ``status_message``;
- trace tags (the trace's and each span's copy) except the configured id keys.

Keys and names are code, not data, and stay. Each value becomes a typed placeholder
(``<EMAIL>``) or, with ``TRACEGW_REDACTION_HMAC_KEY`` set, a keyed pseudonym
(``<EMAIL:3f9a1c2b>``: the first 8 hex of HMAC-SHA256 over the entity and the normalised
value, so one address maps to one token across traces and cannot be reversed without the
key). Audit: each span that had PII gets ``tracegw.redactions`` = {entity: count} (never the
values) and ``tracegw_redactions_total{entity}`` counts them.

``redact_feedback`` and ``redact_bundle`` do the same for feedback comments and bundle notes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections import Counter
from typing import Any

from gateway.config import RedactionConfig
from gateway.metrics import GatewayMetrics
from gateway.model import BundleRecord, FeedbackRecord, SpanRecord, TraceRecord
from gateway.pii import MIN_LEN, find_pii

TRUNCATION_MARKER = "…[truncated {n} chars]"
AUDIT_ATTRIBUTE = "tracegw.redactions"
_CLEAN_CACHE_MAX = 4096  # short strings known to hold no PII (ids, model names, enum values)
_CLEAN_CACHE_MAX_LEN = 64


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


class TextRedactor:
    """Replaces PII in strings and JSON-like values, counting what it replaced by entity."""

    def __init__(self, hmac_key: str = "") -> None:
        self._key = hmac_key.encode() if hmac_key else b""
        self._clean: set[str] = set()

    def token(self, entity: str, canonical: str) -> str:
        if not self._key:
            return f"<{entity}>"
        digest = hmac.new(self._key, f"{entity}:{canonical}".encode(), hashlib.sha256).hexdigest()
        return f"<{entity}:{digest[:8]}>"

    def text(self, value: str, counts: Counter[str]) -> str:
        """``value`` with every entity replaced; ``counts`` gains one per replacement."""
        if len(value) < MIN_LEN or value in self._clean:
            return value
        found = find_pii(value)
        if not found:
            if len(value) <= _CLEAN_CACHE_MAX_LEN:
                if len(self._clean) >= _CLEAN_CACHE_MAX:
                    self._clean.clear()
                self._clean.add(value)
            return value
        parts = []
        last = 0
        for m in found:
            parts.append(value[last:m.start])
            parts.append(self.token(m.entity, m.canonical))
            counts[m.entity] += 1
            last = m.end
        parts.append(value[last:])
        return "".join(parts)

    def value(self, value: Any, counts: Counter[str]) -> Any:
        """Strings anywhere inside ``value`` (dict values, list/tuple items) redacted; keys and
        non-strings unchanged. Containers are copied only when something changed."""
        if isinstance(value, str):
            return self.text(value, counts)
        if isinstance(value, dict):
            out = {k: self.value(v, counts) for k, v in value.items()}
            return out if any(out[k] is not value[k] for k in value) else value
        if isinstance(value, list | tuple):
            items = [self.value(v, counts) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return items if isinstance(value, list) else tuple(items)
        return value


class Redactor:
    """The redact stage: PII replaced, previews capped, counts recorded; pure and synchronous."""

    name = "redact"
    drop_reason = None

    def __init__(self, config: RedactionConfig, metrics: GatewayMetrics | None = None) -> None:
        self._max = config.max_preview_chars
        self._keep_tags = frozenset(config.keep_tags)
        self._metrics = metrics
        self.texts = TextRedactor(config.hmac_key)

    def process(self, traces: list[TraceRecord]) -> list[TraceRecord]:
        total: Counter[str] = Counter()
        for trace in traces:
            tag_counts: Counter[str] = Counter()
            trace.tags = self._tags(trace.tags, tag_counts)
            for span in trace.spans:
                counts = self._span(span)
                if span.is_root and tag_counts:
                    counts.update(tag_counts)
                    tag_counts = Counter()
                if counts:
                    span.attributes[AUDIT_ATTRIBUTE] = dict(counts)
                    total.update(counts)
            if tag_counts and trace.spans:  # no root yet: the audit rides on the first span
                first = trace.spans[0]
                audit = dict(first.attributes.get(AUDIT_ATTRIBUTE) or {})
                for entity, n in tag_counts.items():
                    audit[entity] = audit.get(entity, 0) + n
                first.attributes[AUDIT_ATTRIBUTE] = audit
                total.update(tag_counts)
        self._count(total)
        return traces

    def _span(self, span: SpanRecord) -> Counter[str]:
        counts: Counter[str] = Counter()
        redact = self.texts.value
        if span.inputs is not None:
            span.inputs = cap_preview(redact(span.inputs, counts), self._max)
        if span.outputs is not None:
            span.outputs = cap_preview(redact(span.outputs, counts), self._max)
        attrs = span.attributes
        for key, val in attrs.items():
            if val.__class__ is str:
                if len(val) >= MIN_LEN:
                    attrs[key] = self.texts.text(val, counts)
            elif isinstance(val, list | dict | tuple):
                attrs[key] = redact(val, counts)
        for event in span.events:
            if event.attributes:
                event.attributes = redact(event.attributes, counts)
        if span.status_message:
            span.status_message = self.texts.text(span.status_message, counts)
        if span.trace_tags:  # only on late spans: assembly moves tags to the trace
            span.trace_tags = self._tags(span.trace_tags, counts)
        return counts

    def _tags(self, tags: dict[str, str], counts: Counter[str]) -> dict[str, str]:
        keep = self._keep_tags
        for key, val in tags.items():
            if key not in keep and isinstance(val, str):
                tags[key] = self.texts.text(val, counts)
        return tags

    def redact_feedback(self, record: FeedbackRecord) -> FeedbackRecord:
        """The record with its free text (comment, reason code) redacted."""
        counts: Counter[str] = Counter()
        comment = self.texts.text(record.comment, counts)
        reason = self.texts.text(record.reason_code, counts)
        if not counts:
            return record
        self._count(counts)
        return dataclasses.replace(record, comment=comment, reason_code=reason)

    def redact_bundle(self, record: BundleRecord) -> BundleRecord:
        """The record with its note and the strings inside ``details`` redacted."""
        counts: Counter[str] = Counter()
        note = self.texts.text(record.note, counts)
        details = self.texts.value(record.details, counts)
        if not counts:
            return record
        self._count(counts)
        return dataclasses.replace(record, note=note, details=details)

    def _count(self, counts: Counter[str]) -> None:
        if self._metrics is not None:
            for entity, n in counts.items():
                self._metrics.redactions.labels(entity).inc(n)
