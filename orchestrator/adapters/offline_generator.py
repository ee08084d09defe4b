"""The offline generator: an extractive writer that answers only from the prompt's chunks.

It reads the same prompt a Bedrock model gets (``prompts.build_prompt``: a ``<task>``, the
``<chunk>`` blocks, the ``<question>``) and copies the chunk sentences that best cover the
question, each followed by its citation ``[chunk_id]``. Being extractive, its answers are
grounded by construction; token counts are estimates (about four characters per token).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.adapters.base import Generation, GenerationRequest
from orchestrator.text import tokens

_CHUNK = re.compile(r'<chunk id="([^"]+)" source="([^"]+)" title="([^"]*)">\n?(.*?)\n?</chunk>', re.S)
_PRICE_WORDS = frozenset({"much", "cost", "costs", "price", "priced", "いく", "値段", "価格"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])|(?<=[。！？])")


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
        task, question = _tag(prompt, "task"), _tag(prompt, "question")
        chunks = [_Chunk(*m) for m in _CHUNK.findall(_tag(prompt, "context"))]
        q = set(tokens(question))
        if q & _PRICE_WORDS:
            q |= {"price", "価格"}
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
                        lines.append(f"- {liked[0]} [{chunk.chunk_id}]")
                else:
                    lines.append(f"- {' '.join(sentences(chunk.text)[:2])} [{chunk.chunk_id}]")
                if len(lines) == 3:
                    break
        else:
            for chunk in chunks[:2]:
                picked = _best_sentences(chunk, q, 2)
                if picked:
                    lines.append(f"{' '.join(picked)} [{chunk.chunk_id}]")
        text = "\n".join(lines)
        limit = request.max_tokens * 4
        stop_reason = "end_turn"
        if len(text) > limit:
            text, stop_reason = text[:limit], "max_tokens"
        return Generation(
            text=text,
            input_tokens=max(1, (len(request.system) + len(prompt)) // 4),
            output_tokens=max(1, len(text) // 4),
            stop_reason=stop_reason,
        )
