"""On-demand Bedrock prices in USD per 1,000 tokens (us-east-1), and the cost of one call.

Unknown models cost 0 and are reported as unpriced, never guessed.
"""

from __future__ import annotations

PRICES_PER_1K: dict[str, tuple[float, float]] = {
    # model id: (input, output)
    "anthropic.claude-3-5-haiku-20241022-v1:0": (0.0008, 0.004),
    "anthropic.claude-3-5-sonnet-20241022-v2:0": (0.003, 0.015),
    "anthropic.claude-3-haiku-20240307-v1:0": (0.00025, 0.00125),
    "anthropic.claude-3-7-sonnet-20250219-v1:0": (0.003, 0.015),
    "amazon.nova-micro-v1:0": (0.000035, 0.00014),
    "amazon.nova-lite-v1:0": (0.00006, 0.00024),
    "amazon.nova-pro-v1:0": (0.0008, 0.0032),
    "amazon.titan-embed-text-v2:0": (0.00002, 0.0),
}


def is_priced(model_id: str) -> bool:
    return _base(model_id) in PRICES_PER_1K


def _base(model_id: str) -> str:
    # cross-region inference profiles ("us.anthropic...") cost the same as the base model
    prefix, _, rest = model_id.partition(".")
    return rest if prefix in ("us", "eu", "apac") and rest else model_id


def cost_usd(model_id: str, input_tokens: int, output_tokens: int) -> tuple[float, float]:
    """``(input_cost, output_cost)`` in USD, rounded to 1e-8."""
    price_in, price_out = PRICES_PER_1K.get(_base(model_id), (0.0, 0.0))
    return round(input_tokens / 1000 * price_in, 8), round(output_tokens / 1000 * price_out, 8)
