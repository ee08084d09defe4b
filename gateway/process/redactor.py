"""Redaction: what leaves the gateway carries no PII, and previews are capped.

``Redactor`` is the pipeline stage (pure, synchronous). For every span it replaces the PII
that ``gateway.process.pii`` finds in every string that leaves the gateway:

- inputs and outputs, recursively through JSON values (dict values, list items; keys stay),
  redacted first and then capped at ``MLFLOW_ARTIFACT_MAX_PREVIEW_CHARS`` with a visible
  truncation marker, so a cut can never leave half an e-mail behind;
- attribute values (strings, and strings inside lists and dicts), event attribute values
  (``exception.message``, ``exception.stacktrace``, …), ``status_message``;
- trace tags (the trace's and each span's copy) except the configured id keys.

Keys and names are code, not data, and stay. A string that holds JSON text (a tool call's
``arguments``, an attribute set to ``json.dumps(...)``) or a URL is redacted in that form:
``find_pii`` matches through its ``\\uXXXX`` and ``%XX`` escapes and replaces whole escapes, so the
text stays valid JSON. Each value becomes a typed placeholder
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
from json.encoder import encode_basestring as _encode_string
from typing import Any

from gateway.config import RedactionConfig
from gateway.metrics import GatewayMetrics
from gateway.model import BundleRecord, FeedbackRecord, SpanRecord, TraceRecord
from gateway.process.pii import MIN_LEN, find_pii, may_hold_pii

TRUNCATION_MARKER = "…[truncated {n} chars]"
AUDIT_ATTRIBUTE = "tracegw.redactions"
CLEAN_CACHE_ENTRIES = 4096
"""Strings per generation of the clean cache (two generations: at most twice this many held)."""
CLEAN_CACHE_MAX_CHARS = 64
"""Only strings up to this long are cached: ids, model names, enum values repeat across spans;
free text (messages, replies) rarely does, and would cost memory for nothing."""
_INFINITIES = (float("inf"), float("-inf"))
_SCALARS = frozenset((int, float, bool, type(None), bytes))
"""Classes of values that hold no text: skipped without a call (anything else goes through
``redact_value``, which also handles subclasses of ``str``, ``dict``, ``list`` and ``tuple``)."""


def cap_preview(value: Any, max_chars: int) -> Any:
    """``value`` unchanged when its JSON text fits, else that text cut with a marker."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
        if len(text) <= max_chars:
            return value
    else:
        if _json_len(value, max_chars) <= max_chars:
            return value  # most previews are small dicts: no need to build their JSON text
        text = json.dumps(value, ensure_ascii=False, default=str)
        if len(text) <= max_chars:
            return value
    return text[:max_chars] + TRUNCATION_MARKER.format(n=len(text) - max_chars)


def _json_len(value: Any, limit: int) -> int:
    """``len(json.dumps(value, ensure_ascii=False))`` for JSON-native values (str, int, float,
    bool, None, and lists, tuples and str-keyed dicts of them), without building the text; more
    than ``limit`` as soon as the count passes it, and for anything else (subclasses, other
    types, non-str keys: ``cap_preview`` then builds the text)."""
    cls = value.__class__
    if cls is str:
        return len(_encode_string(value))
    if value is None or cls is bool:
        return 5 if value is False else 4
    if cls is int:
        return len(int.__repr__(value))
    if cls is float:
        if value != value or value in _INFINITIES:
            return 3 if value != value else 8 if value > 0 else 9  # NaN, Infinity, -Infinity
        return len(float.__repr__(value))
    if cls is dict:
        n = 4 * len(value) if value else 2  # "{" "}", per item ": ", between items ", "
        for k, v in value.items():
            if k.__class__ is not str:
                return limit + 1
            n += len(_encode_string(k)) + _json_len(v, limit - n)
            if n > limit:
                return n
        return n
    if cls is list or cls is tuple:
        n = 2 * len(value) if value else 2  # "[" "]" and, per item after the first, ", "
        for v in value:
            n += _json_len(v, limit - n)
            if n > limit:
                return n
        return n
    return limit + 1


class TextRedactor:
    """Replaces PII in strings and JSON-like values, recording what it replaced by entity.

    Most strings in a span are short ids, names and enum values without PII, so the per-string
    cost is what matters: a string shorter than ``MIN_LEN`` is returned as it is; a short string
    already found clean is found in a set (model ids, versions, component names and the ids of
    one trace repeat across spans and tags); any other string first goes through
    ``may_hold_pii``, and only the ones it cannot rule out through ``find_pii``. The cache holds
    only strings that leave the gateway unchanged anyway, never one that held PII, and forgets in
    two generations (``CLEAN_CACHE_ENTRIES`` each), so unique ids pass through it without
    pushing out for long the values that repeat.
    Results for strings WITH PII are not cached: that would keep the original value, or a hash
    of it that a collision could turn into another string's output, for longer than its span.
    """

    def __init__(self, hmac_key: str = "") -> None:
        self._key = hmac_key.encode() if hmac_key else b""
        self._clean: set[str] = set()
        self._clean_old: set[str] = set()

    def token(self, entity: str, canonical: str) -> str:
        if not self._key:
            return f"<{entity}>"
        digest = hmac.new(self._key, f"{entity}:{canonical}".encode(), hashlib.sha256).hexdigest()
        return f"<{entity}:{digest[:8]}>"

    def text(self, value: str, counts: Counter[str]) -> str:
        """``value`` with every entity replaced; ``counts`` gains one per replacement."""
        hits: list[str] = []
        out = self.redact(value, hits)
        if hits:
            counts.update(hits)
        return out

    def redact(self, value: str, hits: list[str]) -> str:
        """``value`` with every entity replaced (the same object when nothing was); the entity
        of each replacement is appended to ``hits``."""
        if len(value) < MIN_LEN or value in self._clean or value in self._clean_old:
            return value
        found = find_pii(value) if may_hold_pii(value) else None
        if not found:
            if len(value) <= CLEAN_CACHE_MAX_CHARS:
                if len(self._clean) >= CLEAN_CACHE_ENTRIES:
                    self._clean_old = self._clean
                    self._clean = set()
                self._clean.add(value)
            return value
        parts = []
        last = 0
        for m in found:
            parts.append(value[last : m.start])
            parts.append(self.token(m.entity, m.canonical))
            hits.append(m.entity)
            last = m.end
        parts.append(value[last:])
        return "".join(parts)

    def value(self, value: Any, counts: Counter[str]) -> Any:
        """Strings anywhere inside ``value`` (dict values, list/tuple items) redacted; keys and
        non-strings unchanged. Containers are copied only when something changed."""
        hits: list[str] = []
        out = self.redact_value(value, hits)
        if hits:
            counts.update(hits)
        return out

    def redact_value(self, value: Any, hits: list[str]) -> Any:
        """``value`` (the same object when nothing changed) with ``redact`` applied to every
        string inside it."""
        cls = value.__class__
        if cls is str:
            return self.redact(value, hits) if len(value) >= MIN_LEN else value
        if cls is dict:
            out = None
            for k, v in value.items():
                new = v if v.__class__ in _SCALARS else self.redact_value(v, hits)
                if new is not v:
                    if out is None:
                        out = dict(value)
                    out[k] = new
            return value if out is None else out
        if cls is list or cls is tuple:
            items = None
            for i, v in enumerate(value):
                new = v if v.__class__ in _SCALARS else self.redact_value(v, hits)
                if new is not v:
                    if items is None:
                        items = list(value)
                    items[i] = new
            if items is None:
                return value
            return items if cls is list else tuple(items)
        if isinstance(value, str | dict | list | tuple):  # subclasses: the slow, general path
            return self._redact_subclass(value, hits)
        return value

    def _redact_subclass(self, value: Any, hits: list[str]) -> Any:
        if isinstance(value, str):
            return self.redact(value, hits)
        if isinstance(value, dict):
            out = {k: self.redact_value(v, hits) for k, v in value.items()}
            return out if any(out[k] is not value[k] for k in value) else value
        items = [self.redact_value(v, hits) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else tuple(items)


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
        span_pass = self._span
        for trace in traces:
            tag_hits: list[str] = []
            if trace.tags:
                self._tags(trace.tags, tag_hits)
            for span in trace.spans:
                hits: list[str] = []
                span_pass(span, hits)
                if tag_hits and span.is_root:  # the root carries the tags' audit
                    hits += tag_hits
                    tag_hits = []
                if hits:
                    counts = Counter(hits)
                    span.attributes[AUDIT_ATTRIBUTE] = dict(counts)
                    total.update(counts)
            if tag_hits and trace.spans:  # no root yet: the audit rides on the first span
                first = trace.spans[0]
                audit = dict(first.attributes.get(AUDIT_ATTRIBUTE) or {})
                for entity, n in Counter(tag_hits).items():
                    audit[entity] = audit.get(entity, 0) + n
                first.attributes[AUDIT_ATTRIBUTE] = audit
                total.update(tag_hits)
        if total:
            self._count(total)
        return traces

    def _span(self, span: SpanRecord, hits: list[str]) -> None:
        texts = self.texts
        if span.inputs is not None:
            span.inputs = cap_preview(texts.redact_value(span.inputs, hits), self._max)
        if span.outputs is not None:
            span.outputs = cap_preview(texts.redact_value(span.outputs, hits), self._max)
        attrs = span.attributes
        if attrs:
            redact = texts.redact
            for key, val in attrs.items():  # values replaced in place: the dict never changes size
                cls = val.__class__
                if cls is str:
                    if len(val) >= MIN_LEN:
                        new = redact(val, hits)
                        if new is not val:
                            attrs[key] = new
                elif cls not in _SCALARS:
                    new = texts.redact_value(val, hits)
                    if new is not val:
                        attrs[key] = new
        for event in span.events:
            if event.attributes:
                event.attributes = texts.redact_value(event.attributes, hits)
        if span.status_message:
            span.status_message = texts.redact(span.status_message, hits)
        if span.trace_tags:  # only on late spans: assembly moves tags to the trace
            self._tags(span.trace_tags, hits)

    def _tags(self, tags: dict[str, str], hits: list[str]) -> None:
        keep = self._keep_tags
        redact = self.texts.redact
        for key, val in tags.items():
            if key not in keep and isinstance(val, str) and len(val) >= MIN_LEN:
                new = redact(val, hits)
                if new is not val:
                    tags[key] = new

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
        """The record with its actor id, note and the strings inside ``details`` redacted (an id
        field is meant to hold an id, but may hold an e-mail address)."""
        counts: Counter[str] = Counter()
        actor_id = self.texts.text(record.actor_id, counts)
        note = self.texts.text(record.note, counts)
        details = self.texts.value(record.details, counts)
        if not counts:
            return record
        self._count(counts)
        return dataclasses.replace(record, actor_id=actor_id, note=note, details=details)

    def _count(self, counts: Counter[str]) -> None:
        if self._metrics is not None:
            for entity, n in counts.items():
                self._metrics.redactions.labels(entity).inc(n)
