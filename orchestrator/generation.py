"""The traced generation call: the one place that records spec §7's ``bedrock_generate`` span.

Whatever the provider (Bedrock Converse or the offline writer), the span carries ``provider``,
``bedrock_model_id``, ``prompt_version``, ``prompt_hash``, ``prompt_chars``, a prompt preview
(the first 500 characters; the gateway redacts PII), ``temperature``, ``max_tokens``,
``input_tokens``, ``output_tokens``, ``stop_reason``, ``latency_ms`` and the cost from
``prices`` (``input_cost_usd``, ``output_cost_usd``, ``cost_usd``, ``priced``).
"""

from __future__ import annotations

import time

from clients import Tracer
from orchestrator.adapters.base import Generation, GenerationRequest, Generator
from orchestrator.prices import cost_usd, is_priced
from orchestrator.prompts import BuiltPrompt


def traced_generate(
    tracer: Tracer, generator: Generator, prompt: BuiltPrompt, model_id: str, temperature: float, max_tokens: int
) -> tuple[Generation, float]:
    """Generate inside a ``bedrock_generate`` span; returns the generation and its cost in USD.

    Provider errors propagate (the span records them with status ERROR).
    """
    request = GenerationRequest(
        model_id=model_id, system=prompt.system, prompt=prompt.prompt, temperature=temperature, max_tokens=max_tokens
    )
    with tracer.start_span(
        "bedrock_generate",
        span_type="LLM",
        attributes={
            "provider": generator.provider,
            "bedrock_model_id": model_id,
            "prompt_version": prompt.prompt_version,
            "prompt_hash": prompt.prompt_hash,
            "prompt_chars": prompt.chars,
            "prompt_preview": prompt.preview,
            "temperature": temperature,
            "max_tokens": max_tokens,
        },
    ) as span:
        span.set_inputs({"prompt_preview": prompt.preview})
        started = time.perf_counter()
        try:
            generation = generator.generate(request)
        finally:
            span.set_attribute("latency_ms", round((time.perf_counter() - started) * 1000, 3))
        input_cost, output_cost = cost_usd(model_id, generation.input_tokens, generation.output_tokens)
        span.set_attributes(
            {
                "input_tokens": generation.input_tokens,
                "output_tokens": generation.output_tokens,
                "stop_reason": generation.stop_reason,
                "input_cost_usd": input_cost,
                "output_cost_usd": output_cost,
                "cost_usd": round(input_cost + output_cost, 8),
                "priced": is_priced(model_id),
            }
        )
        if generation.model_latency_ms is not None:
            span.set_attribute("model_latency_ms", generation.model_latency_ms)
        span.set_outputs({"text": generation.text})
    return generation, input_cost + output_cost
