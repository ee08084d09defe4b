"""The offline model (a simulation) follows the instructions its system prompt declares, and each
offline model id has its own profile, so prompt and model changes are visible offline."""

from __future__ import annotations

from orchestrator.adapters.base import GenerationRequest
from orchestrator.adapters.offline_generator import DONT_KNOW, ExtractiveGenerator, Instructions
from orchestrator.prompts import SYSTEM_PROMPTS

HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"
SONNET = "anthropic.claude-3-5-sonnet-20241022-v2:0"
RULES_WITHOUT_CITING = (
    "Answer only from the <context> chunks. If the chunks do not answer the question, say you do not know. "
    "Answer in the customer's language."
)


def chunk(cid: str, title: str, text: str) -> str:
    return f'<chunk id="{cid}" source="catalog" title="{title}">\n{text}\n</chunk>'


def prompt(task: str, question: str, *chunks: str) -> str:
    return f"<task>{task}</task>\n<page>page_type=home</page>\n<history>\n\n</history>\n<context>\n" + (
        "\n".join(chunks) + f"\n</context>\n<question>\n{question}\n</question>"
    )


SHIPPING = chunk("faq_001", "Shipping", "Standard shipping takes 3 to 5 days. Express shipping takes 1 day.")
SHIPPING_JA = chunk("faq_101", "配送", "通常配送は3〜5日かかります。")
SERIES = [
    chunk(f"cat_{i:03d}", f"Series {i}: vol 1", f"Series {i} is a story about heroes. Readers love it.")
    for i in range(6)
]


def generate(system: str, body: str, model: str = HAIKU) -> str:
    return ExtractiveGenerator().generate(GenerationRequest(model, system, body, 0.2, 512)).text


def test_the_shipped_prompts_declare_citations_a_refusal_rule_and_the_customers_language() -> None:
    for version, system in SYSTEM_PROMPTS.items():
        rules = Instructions.parse(system)
        assert rules.cite and rules.dont_know and rules.customer_language, version
    assert Instructions.parse(SYSTEM_PROMPTS["recommendation-2.4"]).max_items == 3


def test_it_cites_chunk_ids_only_when_the_prompt_says_to() -> None:
    body = prompt("faq", "how long does shipping take", SHIPPING)
    assert "[faq_001]" in generate(SYSTEM_PROMPTS["faq-2.0"], body)
    without = generate("You are MangaAssist. " + RULES_WITHOUT_CITING, body)
    assert "shipping takes" in without.lower() and "[" not in without


def test_it_says_it_does_not_know_only_when_told_to() -> None:
    body = prompt("faq", "can I pay with bitcoin", SHIPPING)
    assert generate(SYSTEM_PROMPTS["faq-2.0"], body) == DONT_KNOW["en"]
    careless = generate("You are MangaAssist. Cite each fact with its chunk id.", body)
    assert careless.startswith("Standard shipping")  # answers from the first chunk anyway


def test_the_customers_language_rule_puts_chunks_in_that_language_first() -> None:
    body = prompt("faq", "配送は何日かかりますか", SHIPPING, SHIPPING_JA)
    assert generate(SYSTEM_PROMPTS["faq-2.0"], body).startswith("通常配送")
    assert generate(
        "Cite each fact with its chunk id.", prompt("faq", "配送は何日かかりますか", SHIPPING_JA)
    ).startswith("通常配送")


def test_it_recommends_at_most_the_number_of_items_the_prompt_names() -> None:
    body = prompt("recommendation", "recommend something like heroes", *SERIES)
    assert len(generate(SYSTEM_PROMPTS["recommendation-2.4"], body).splitlines()) == 3
    assert len(generate("Recommend up to two manga. Cite each fact with its chunk id.", body).splitlines()) == 2
    assert len(generate("Recommend manga. Cite each fact with its chunk id.", body).splitlines()) == 5


def test_each_offline_model_has_its_own_profile() -> None:
    body = prompt("faq", "how long does shipping take express standard", SHIPPING)
    system = SYSTEM_PROMPTS["faq-2.0"]
    haiku = ExtractiveGenerator().generate(GenerationRequest(HAIKU, system, body, 0.2, 512))
    sonnet = ExtractiveGenerator().generate(GenerationRequest(SONNET, system, body, 0.2, 512))
    assert haiku.model_latency_ms is not None and sonnet.model_latency_ms is not None
    assert sonnet.model_latency_ms > 2 * haiku.model_latency_ms
    micro = ExtractiveGenerator().generate(GenerationRequest("amazon.nova-micro-v1:0", system, body, 0.2, 512))
    assert micro.output_tokens < haiku.output_tokens  # one sentence per chunk, against two
