"""Guardrails (spec §9): four stages behind one interface, each traced as its own span.

Every stage returns a :class:`StageResult` (``passed``, ``score``, ``reason``, ``rule_id``)
plus what it did: ``action="redact"`` with the rewritten answer, or ``action="block"`` (the
answer is replaced by a safe fallback, ``fallback_triggered=true``).

- ``prompt_injection`` screens the customer's message. It runs before retrieval (so an attack
  never reaches the model: ``screen_input``) and its verdict and latency are recorded on its
  span under ``apply_guardrails``;
- ``pii_detection`` redacts e-mail addresses, phone numbers and card numbers in the answer;
- ``grounding_check`` blocks answers whose sentences are not supported by the retrieved chunks
  (token coverage, and every number must appear in a chunk);
- ``format_validation`` blocks empty answers, strips leaked prompt markup and citations of
  chunks that were not retrieved, and truncates over-long answers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from clients import Tracer
from orchestrator.adapters.offline_generator import sentences
from orchestrator.corpus import Document
from orchestrator.text import is_japanese, numbers, tokens

RULESET_VERSION = "guardrails-12"
FALLBACK_EN = (
    "Sorry, I can't help with that here. You can browse the catalog, or contact customer support "
    "from Help > Contact us."
)
FALLBACK_JA = "申し訳ありません。このご質問にはお答えできません。ヘルプ > お問い合わせからサポートにご連絡ください。"


def fallback_answer(locale: str, message: str = "", en: str = FALLBACK_EN, ja: str = FALLBACK_JA) -> str:
    return ja if locale.startswith("ja") or is_japanese(message) else en


class RulesetError(ValueError):
    """A guardrail ruleset's params cannot be served; the message names each bad param."""


_INLINE_FLAGS = re.compile(r"^\(\?[ims]+\)")


def pattern_param(pattern: re.Pattern[str]) -> str:
    """A compiled pattern as a registry param: its flags inline, so ``re.compile`` gives it back."""
    flags = "".join(f for f, bit in (("i", re.I), ("m", re.M), ("s", re.S)) if pattern.flags & bit)
    body = _INLINE_FLAGS.sub("", pattern.pattern, count=1)  # a pattern read back from params has them already
    return f"(?{flags}){body}" if flags else body


@dataclass(frozen=True, slots=True)
class StageResult:
    passed: bool
    score: float | None
    reason: str | None
    rule_id: str | None
    action: str | None = None
    """``None``, ``"redact"`` (``text`` is the rewritten answer) or ``"block"``."""
    text: str | None = None
    latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class GuardrailInput:
    message: str
    answer: str
    chunks: Sequence[Document]
    grounding_required: bool


class Stage(Protocol):
    name: str

    def check(self, data: GuardrailInput) -> StageResult: ...


def _timed(stage: Stage, data: GuardrailInput) -> StageResult:
    started = time.perf_counter()
    result = stage.check(data)
    return replace(result, latency_ms=round((time.perf_counter() - started) * 1000, 3))


class PromptInjectionStage:
    name = "prompt_injection"
    RULES = (
        (
            "pi-001",
            re.compile(
                r"\b(ignore|forget|override)\b.{0,30}\b(previous|prior|above|earlier|all|your)\b.{0,20}"
                r"\b(instructions?|prompts?|rules|guidelines)",
                re.I,
            ),
        ),
        ("pi-002", re.compile(r"\bdisregard\b.{0,30}\b(instructions?|rules|guidelines|policy)", re.I)),
        (
            "pi-003",
            re.compile(
                r"\b(reveal|show|print|repeat|leak)\b.{0,30}\b(system prompt|hidden prompt|your prompt|"
                r"(your|the) (initial|original|hidden|system) instructions)",
                re.I,
            ),
        ),
        ("pi-004", re.compile(r"\byou are now\b|\bdeveloper mode\b|\bjailbreak|\bDAN\b|\bno restrictions\b", re.I)),
        ("pi-005", re.compile(r"</?\s*(system|context|chunk|question|task)\s*>", re.I)),
        ("pi-006", re.compile(r"(以前|前|上)の指示を(無視|忘れ)|システムプロンプト")),
    )

    def __init__(self, ruleset: GuardrailRuleset | None = None) -> None:
        self.rules = ruleset.injection_rules if ruleset else self.RULES

    def check(self, data: GuardrailInput) -> StageResult:
        for rule_id, pattern in self.rules:
            if pattern.search(data.message):
                return StageResult(False, 1.0, "prompt injection pattern in the message", rule_id, "block")
        return StageResult(True, 0.0, None, None)


class PiiStage:
    name = "pii_detection"
    EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
    PHONE = re.compile(r"(?<!\d)(?<!\d[ -])(?:\+?\d[\d ()-]{8,16}\d)(?!\d)(?![ -]\d)")  # whole digit groups only
    CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")

    def __init__(self, ruleset: GuardrailRuleset | None = None) -> None:
        self.email = ruleset.email if ruleset else self.EMAIL
        self.phone = ruleset.phone if ruleset else self.PHONE
        self.card = ruleset.card if ruleset else self.CARD

    @staticmethod
    def _luhn(digits: str) -> bool:
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        return total % 10 == 0

    def check(self, data: GuardrailInput) -> StageResult:
        text, found = data.answer, []
        for match in list(self.card.finditer(text)):
            digits = re.sub(r"\D", "", match.group())
            if self._luhn(digits):
                text = text.replace(match.group(), "[redacted card]")
                found.append("card")
        text, n_email = self.email.subn("[redacted email]", text)
        found += ["email"] * n_email
        for match in list(self.phone.finditer(text)):
            if 10 <= len(re.sub(r"\D", "", match.group())) <= 13:  # longer runs are ids, not phones
                text = text.replace(match.group(), "[redacted phone]")
                found.append("phone")
        if not found:
            return StageResult(True, 0.0, None, None)
        kinds = sorted(set(found))
        return StageResult(
            False, 1.0, f"PII in the answer: {', '.join(kinds)} ({len(found)})", "pii-" + kinds[0], "redact", text
        )


_CITATION = re.compile(r"\s*\[([A-Za-z0-9_.:-]+)\]")


class GroundingStage:
    name = "grounding_check"
    SENTENCE_COVERAGE = 0.7
    ANSWER_SUPPORT = 0.8

    def __init__(self, ruleset: GuardrailRuleset | None = None) -> None:
        self.sentence_coverage = ruleset.sentence_coverage if ruleset else self.SENTENCE_COVERAGE
        self.answer_support = ruleset.answer_support if ruleset else self.ANSWER_SUPPORT

    def check(self, data: GuardrailInput) -> StageResult:
        if not data.grounding_required:
            return StageResult(True, None, "not required: rule-based answer from an approved template", None)
        support_tokens: set[str] = set()
        support_numbers: set[str] = set()
        for chunk in data.chunks:
            support_tokens.update(tokens(f"{chunk.title} {chunk.text}"))
            support_numbers |= numbers(f"{chunk.title} {chunk.text}")
        claims = [
            s
            for line in _CITATION.sub("", data.answer).splitlines()
            for s in sentences(line.lstrip("-• ").strip())
            if tokens(s)
        ]
        if not claims:
            return StageResult(False, 0.0, "answer has no statements to ground", "grounding-002", "block")
        unsupported = []
        for claim in claims:
            claim_tokens = set(tokens(claim))
            coverage = len(claim_tokens & support_tokens) / len(claim_tokens)
            if coverage < self.sentence_coverage or not numbers(claim) <= support_numbers:
                unsupported.append(claim)
        score = round(1 - len(unsupported) / len(claims), 3)
        if score >= self.answer_support:
            return StageResult(True, score, None, None)
        return StageResult(
            False,
            score,
            f"{len(unsupported)} of {len(claims)} statements not supported by the "
            f"retrieved chunks, e.g. {unsupported[0][:80]!r}",
            "grounding-001",
            "block",
        )


class FormatStage:
    name = "format_validation"
    MAX_CHARS = 1500
    MARKUP = re.compile(
        r"</?\s*(system|context|chunk|question|task|page|history)\b[^>]*>|^(System|Human|Assistant):", re.I | re.M
    )

    def __init__(self, ruleset: GuardrailRuleset | None = None) -> None:
        self.max_chars = ruleset.max_chars if ruleset else self.MAX_CHARS
        self.markup = ruleset.markup if ruleset else self.MARKUP

    def check(self, data: GuardrailInput) -> StageResult:
        text = data.answer.strip()
        if not text:
            return StageResult(False, 0.0, "empty answer", "format-001", "block")
        problems, rule = [], None
        if self.markup.search(text):
            text, rule = self.markup.sub("", text).strip(), "format-002"
            problems.append("prompt markup removed")
        known = {c.doc_id for c in data.chunks}
        bad = [m.group(1) for m in _CITATION.finditer(text) if m.group(1) not in known and data.chunks]
        if bad:
            text = _CITATION.sub(lambda m: "" if m.group(1) in bad else m.group(0), text)
            rule = rule or "format-003"
            problems.append(f"citations of chunks not retrieved removed: {', '.join(bad[:3])}")
        if len(text) > self.max_chars:
            cut = text[: self.max_chars]
            text = cut[: max(cut.rfind(". "), cut.rfind("。"), cut.rfind("\n")) + 1] or cut
            rule = rule or "format-004"
            problems.append(f"truncated to {len(text)} characters")
        if not text:
            return StageResult(False, 0.0, "nothing left after cleanup", "format-001", "block")
        if problems:
            return StageResult(False, 0.5, "; ".join(problems), rule, "redact", text)
        return StageResult(True, 1.0, None, None)


@dataclass(frozen=True, slots=True)
class GuardrailRuleset:
    """What the four stages read: thresholds, limits, rule patterns, fallback texts.

    ``GuardrailRuleset()`` is the shipped ruleset (the class attributes below); a release bundle's
    ruleset (registered model ``mangaassist-guardrails``) is built from its params by
    :meth:`from_params`, so a candidate that changes a threshold or a rule really behaves
    differently. ``mangaassist-release`` registers the shipped one from :meth:`params`."""

    version: str = RULESET_VERSION
    injection_rules: tuple[tuple[str, re.Pattern[str]], ...] = PromptInjectionStage.RULES
    email: re.Pattern[str] = PiiStage.EMAIL
    phone: re.Pattern[str] = PiiStage.PHONE
    card: re.Pattern[str] = PiiStage.CARD
    sentence_coverage: float = GroundingStage.SENTENCE_COVERAGE
    answer_support: float = GroundingStage.ANSWER_SUPPORT
    max_chars: int = FormatStage.MAX_CHARS
    markup: re.Pattern[str] = FormatStage.MARKUP
    fallback_en: str = FALLBACK_EN
    fallback_ja: str = FALLBACK_JA

    def params(self) -> dict[str, str]:
        """The registry params of this ruleset (the inverse of :meth:`from_params`)."""
        params = {
            "ruleset_version": self.version,
            "stages": "prompt_injection,pii_detection,grounding_check,format_validation",
            "grounding.sentence_coverage": str(self.sentence_coverage),
            "grounding.answer_support": str(self.answer_support),
            "format.max_chars": str(self.max_chars),
            "format.markup_pattern": pattern_param(self.markup),
            "pii.email_pattern": pattern_param(self.email),
            "pii.phone_pattern": pattern_param(self.phone),
            "pii.card_pattern": pattern_param(self.card) + " (Luhn-checked)",
            "fallback.en": self.fallback_en,
            "fallback.ja": self.fallback_ja,
        }
        for rule_id, pattern in self.injection_rules:
            params[f"prompt_injection.{rule_id}"] = pattern_param(pattern)
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> GuardrailRuleset:
        problems: list[str] = []

        def number(key: str, low: float, high: float) -> float:
            try:
                value = float(params[key])
            except (KeyError, ValueError):
                problems.append(f"{key} must be a number")
                return low
            if not low <= value <= high:
                problems.append(f"{key}={value} is outside [{low}, {high}]")
            return value

        def pattern(key: str, suffix: str = "") -> re.Pattern[str]:
            raw = params.get(key)
            if raw is None:
                problems.append(f"{key} is missing")
                return _NEVER
            try:
                return re.compile(raw.removesuffix(suffix))
            except re.error as exc:
                problems.append(f"{key} is not a valid pattern ({exc})")
                return _NEVER

        rules = tuple(
            (key.removeprefix("prompt_injection."), pattern(key))
            for key in sorted(params)
            if key.startswith("prompt_injection.")
        )
        if not rules:
            problems.append("no prompt_injection.<rule id> rule")
        if params.get("stages") != "prompt_injection,pii_detection,grounding_check,format_validation":
            problems.append(f"stages={params.get('stages')!r}: this build runs exactly the four shipped stages")
        ruleset = cls(
            version=params.get("ruleset_version") or "",
            injection_rules=rules,
            email=pattern("pii.email_pattern"),
            phone=pattern("pii.phone_pattern"),
            card=pattern("pii.card_pattern", " (Luhn-checked)"),
            sentence_coverage=number("grounding.sentence_coverage", 0.0, 1.0),
            answer_support=number("grounding.answer_support", 0.0, 1.0),
            max_chars=int(number("format.max_chars", 100, 20_000)),
            markup=pattern("format.markup_pattern"),
            fallback_en=params.get("fallback.en") or "",
            fallback_ja=params.get("fallback.ja") or "",
        )
        if not ruleset.version:
            problems.append("ruleset_version is missing")
        if not ruleset.fallback_en or not ruleset.fallback_ja:
            problems.append("fallback.en and fallback.ja must be set")
        if problems:
            raise RulesetError("guardrail ruleset: " + "; ".join(problems))
        return ruleset


_NEVER = re.compile(r"(?!)")


@dataclass(frozen=True, slots=True)
class GuardrailOutcome:
    reply: str
    blocked: bool
    rewritten: bool
    results: dict[str, StageResult]


class Guardrails:
    """Runs the four stages in order inside ``apply_guardrails``; later stages see earlier rewrites."""

    def __init__(self, tracer: Tracer, ruleset: GuardrailRuleset | None = None) -> None:
        self._tracer = tracer
        self.ruleset = ruleset or GuardrailRuleset()
        self.ruleset_version = self.ruleset.version
        self.injection = PromptInjectionStage(ruleset)
        self.stages: tuple[Stage, ...] = (
            self.injection,
            PiiStage(ruleset),
            GroundingStage(ruleset),
            FormatStage(ruleset),
        )
        self._siblings: dict[int, Guardrails] = {}

    def for_ruleset(self, ruleset: GuardrailRuleset | None) -> Guardrails:
        """These guardrails configured by ``ruleset`` (a served bundle's); ``None``: these.
        One instance per ruleset object, kept while the bundle serves (at most a few)."""
        if ruleset is None or ruleset is self.ruleset:
            return self
        sibling = self._siblings.get(id(ruleset))
        if sibling is None or sibling.ruleset is not ruleset:
            if len(self._siblings) >= 8:
                self._siblings.clear()
            sibling = self._siblings[id(ruleset)] = Guardrails(self._tracer, ruleset)
        return sibling

    def screen_input(self, message: str) -> StageResult:
        """The prompt-injection verdict, computed before anything reaches retrieval or the model."""
        return _timed(self.injection, GuardrailInput(message, "", (), False))

    def apply(
        self,
        message: str,
        answer: str,
        chunks: Sequence[Document],
        locale: str,
        grounding_required: bool,
        input_verdict: StageResult,
    ) -> GuardrailOutcome:
        tracer = self._tracer
        results: dict[str, StageResult] = {}
        blocked = rewritten = False
        with tracer.start_span(
            "apply_guardrails", span_type="GUARDRAIL", attributes={"ruleset_version": self.ruleset_version}
        ) as group:
            for stage in self.stages:
                with tracer.start_span(stage.name, span_type="GUARDRAIL") as span:
                    if stage is self.injection:
                        result = input_verdict
                        span.set_attribute("checked", "input message, before retrieval")
                    elif blocked:
                        result = StageResult(True, None, "skipped: answer already replaced by the fallback", None)
                    else:
                        result = _timed(stage, GuardrailInput(message, answer, chunks, grounding_required))
                    attrs = {
                        "passed": result.passed,
                        "rule_id": result.rule_id,
                        "reason": result.reason,
                        "latency_ms": result.latency_ms,
                    }
                    if result.score is not None:
                        attrs["score"] = result.score
                    if result.action == "block":
                        blocked = True
                        answer = fallback_answer(locale, message, self.ruleset.fallback_en, self.ruleset.fallback_ja)
                        attrs.update(action="block", fallback_triggered=True)
                    elif result.action == "redact" and result.text is not None:
                        rewritten = True
                        answer = result.text
                        attrs.update(action="redact", fallback_triggered=False)
                    span.set_attributes({k: v for k, v in attrs.items() if v is not None})
                results[stage.name] = result
            group.set_attributes(
                {
                    "passed": all(r.passed for r in results.values()),
                    "action": "block" if blocked else "redact" if rewritten else "none",
                    "fallback_triggered": blocked,
                }
            )
        return GuardrailOutcome(answer, blocked, rewritten, results)
