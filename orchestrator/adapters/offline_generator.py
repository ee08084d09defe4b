"""The offline generator: a deterministic, extractive **simulation** of a Bedrock model.

It reads the same system prompt and prompt a Bedrock model gets (``prompts.build_prompt``: a
``<task>``, the ``<chunk>`` blocks, the ``<question>``) and copies the chunk sentences that best
cover the question. It follows the instructions the system prompt declares, so that a prompt
change is visible offline (``Instructions.parse``):

- cite each fact with its chunk id (``[faq_003]``) only when the prompt says to cite chunk ids;
- say it does not know when the chunks do not answer, only when the prompt says so — otherwise
  it answers from the first chunk anyway, as a careless model would;
- answer in the customer's language only when told: chunks in the question's language first, and
  a "do not know" in Japanese for a Japanese question;
- recommend at most the number of items the prompt names ("up to three"; otherwise five).

Each offline model id has a profile (``PROFILES``): how many sentences it writes per chunk and a
simulated service latency (``model_latency_ms``: base + per output token), so a model swap shows
in token use, cost (``prices``) and latency. These are stand-in figures, documented here, not
Bedrock's: offline quality figures measure this simulation; ``MANGAASSIST_PROVIDERS=aws`` runs
the same pipeline against Bedrock. Token counts are estimates (about four characters per token).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.adapters.base import Generation, GenerationRequest
from orchestrator.text import tokens

_CHUNK = re.compile(r'<chunk id="([^"]+)" source="([^"]+)" title="([^"]*)">\n?(.*?)\n?</chunk>', re.S)
_PRICE_WORDS = frozenset({"much", "cost", "costs", "price", "priced", "いく", "値段", "価格"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])|(?<=[。！？])")


_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
DONT_KNOW = {
    "en": "I'm sorry, I don't know: the store information I have does not answer that.",
    "ja": "申し訳ありません。手元のストア情報ではお答えできません。",
}


def _mostly_japanese(text: str) -> bool:
    letters = [ch for ch in text if not ch.isspace()]
    return bool(letters) and len(_JAPANESE.findall(text)) > 0.3 * len(letters)


@dataclass(frozen=True, slots=True)
class Instructions:
    """What a system prompt tells the model to do, as this simulation understands it."""

    cite: bool
    dont_know: bool
    customer_language: bool
    max_items: int

    @classmethod
    def parse(cls, system: str) -> Instructions:
        text = system.lower()
        items = re.search(r"up to (\d+|one|two|three|four|five|six)\b", text)
        n = 5
        if items:
            n = int(items.group(1)) if items.group(1).isdigit() else _NUMBER_WORDS[items.group(1)]
        return cls(
            cite=bool(re.search(r"\bcite\b[^.]*\bchunk id", text)),
            dont_know=bool(re.search(r"(say|answer) (that )?you do(n't| not) know", text)),
            customer_language=bool(re.search(r"customer'?s language", text)),
            max_items=max(1, n),
        )


@dataclass(frozen=True, slots=True)
class ModelProfile:
    sentences_per_chunk: int
    base_latency_ms: float
    per_token_ms: float


PROFILES: dict[str, ModelProfile] = {
    # stand-in figures for the simulation, ordered roughly as the real models compare
    "anthropic.claude-3-5-haiku-20241022-v1:0": ModelProfile(2, 380.0, 9.0),
    "anthropic.claude-3-haiku-20240307-v1:0": ModelProfile(1, 260.0, 6.0),
    "anthropic.claude-3-5-sonnet-20241022-v2:0": ModelProfile(3, 950.0, 21.0),
    "anthropic.claude-3-7-sonnet-20250219-v1:0": ModelProfile(3, 1100.0, 22.0),
    "amazon.nova-micro-v1:0": ModelProfile(1, 160.0, 3.0),
    "amazon.nova-lite-v1:0": ModelProfile(2, 210.0, 4.0),
    "amazon.nova-pro-v1:0": ModelProfile(3, 620.0, 12.0),
}
DEFAULT_PROFILE = PROFILES["anthropic.claude-3-5-haiku-20241022-v1:0"]


def profile_of(model_id: str) -> ModelProfile:
    prefix, _, rest = model_id.partition(".")
    return PROFILES.get(rest if prefix in ("us", "eu", "apac") and rest else model_id, DEFAULT_PROFILE)


@dataclass(frozen=True, slots=True)
class _Chunk:
    chunk_id: str
    source: str
    title: str
    text: str


def _tag(prompt: str, name: str) -> str:
    match = re.search(rf"<{name}>\n?(.*?)\n?</{name}>", prompt, re.S)
    return match.group(1).strip() if match else ""


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _best_sentences(chunk: _Chunk, question: set[str], limit: int) -> list[str]:
    ranked = sorted(enumerate(sentences(chunk.text)), key=lambda p: (-len(question & set(tokens(p[1]))), p[0]))
    picked = [(i, s) for i, s in ranked[:limit] if question & set(tokens(s))]
    return [s for _, s in sorted(picked)]


def _named_in(title: str, lowered_question: str) -> bool:
    """Whether the question names the series of ``title`` (its longest leading words, 4+ chars)."""
    words = re.split(r"[,:]", title)[0].split()
    return any(
        len(p) >= 4 and p.lower() in lowered_question for p in (" ".join(words[:n]) for n in range(len(words), 0, -1))
    )


class ExtractiveGenerator:
    provider = "offline"

    def generate(self, request: GenerationRequest) -> Generation:
        prompt = request.prompt
        rules = Instructions.parse(request.system)
        profile = profile_of(request.model_id)
        task, question = _tag(prompt, "task"), _tag(prompt, "question")
        chunks = [_Chunk(*m) for m in _CHUNK.findall(_tag(prompt, "context"))]
        q = set(tokens(question))
        if q & _PRICE_WORDS:
            q |= {"price", "価格"}
        japanese = bool(_JAPANESE.search(question))
        if rules.customer_language:  # chunks in the customer's language first (stable otherwise)
            chunks.sort(key=lambda c: _mostly_japanese(c.text) != japanese)

        def cited(text: str, chunk: _Chunk) -> str:
            return f"{text} [{chunk.chunk_id}]" if rules.cite else text

        lines: list[str] = []
        if task == "recommendation":
            seen: set[str] = set()
            lowered = question.lower()
            for chunk in chunks:
                series = re.split(r"[,:]", chunk.title)[0].strip()
                if series in seen:
                    continue
                seen.add(series)
                if _named_in(chunk.title, lowered):  # the customer's own series: pass on what its readers liked
                    liked = [s for s in sentences(chunk.text) if "also enjoyed" in s]
                    if liked:
                        lines.append("- " + cited(liked[0], chunk))
                else:
                    lines.append("- " + cited(" ".join(sentences(chunk.text)[: profile.sentences_per_chunk]), chunk))
                if len(lines) == rules.max_items:
                    break
        else:
            for chunk in chunks[:2]:
                picked = _best_sentences(chunk, q, profile.sentences_per_chunk)
                if picked:
                    lines.append(cited(" ".join(picked), chunk))
            if not lines and chunks and not rules.dont_know:
                # told nothing about unanswerable questions: it answers from the first chunk anyway
                lines.append(cited(" ".join(sentences(chunks[0].text)[: profile.sentences_per_chunk]), chunks[0]))
        if not lines and rules.dont_know:
            lines.append(DONT_KNOW["ja" if japanese and rules.customer_language else "en"])
        text = "\n".join(lines)
        limit = request.max_tokens * 4
        stop_reason = "end_turn"
        if len(text) > limit:
            text, stop_reason = text[:limit], "max_tokens"
        output_tokens = max(1, len(text) // 4)
        return Generation(
            text=text,
            input_tokens=max(1, (len(request.system) + len(prompt)) // 4),
            output_tokens=output_tokens,
            stop_reason=stop_reason,
            model_latency_ms=round(profile.base_latency_ms + profile.per_token_ms * output_tokens, 1),
        )
