"""What a run will cost before it sends anything: a character-based token estimate.

No tokenizer is downloaded: a prompt is estimated at one token per
`CHARS_PER_TOKEN` characters (the system prompt, sent first and the same for every
request, plus the rendered conversation), which for English prose is within
about ±25 % of what OpenAI's tokenizers count (`ESTIMATE_MARGIN`); other languages
and code can be off by more. A completion is assumed to be
`expected_completion_tokens` long (the annotation is a few short fields; it can
never pass `max_completion_tokens`). Conversations the enrichment cache already
holds cost nothing and are counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from enrichment_assets.enrichers.annotation import ModelPrice

CHARS_PER_TOKEN = 4
ESTIMATE_MARGIN = 0.25
# Chat framing (role markers, message separators) per request, in tokens.
FRAMING_TOKENS = 8
DEFAULT_EXPECTED_COMPLETION_TOKENS = 150


def estimate_prompt_tokens(system_prompt: str, conversation_text: str) -> int:
    """The prompt tokens of one request, by the character rule of the module docstring."""
    return (len(system_prompt) + len(conversation_text)) // CHARS_PER_TOKEN + FRAMING_TOKENS


@dataclass(frozen=True)
class CostEstimate:
    """The estimated cost of annotating some conversations (see the module docstring)."""

    model: str
    conversations: int  # rows to annotate
    requests: int  # distinct conversations not in the cache: what would be sent
    cached: int  # distinct conversations the cache answers for free
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: no price known for the model
    expected_completion_tokens: int = DEFAULT_EXPECTED_COMPLETION_TOKENS

    @classmethod
    def of(
        cls,
        *,
        model: str,
        conversations: int,
        prompt_tokens: list[int],
        cached: int,
        expected_completion_tokens: int,
        price: ModelPrice | None,
    ) -> CostEstimate:
        completion = expected_completion_tokens * len(prompt_tokens)
        prompt = sum(prompt_tokens)
        return cls(
            model=model,
            conversations=conversations,
            requests=len(prompt_tokens),
            cached=cached,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=price.cost(prompt, completion) if price is not None else None,
            expected_completion_tokens=expected_completion_tokens,
        )

    def __add__(self, other: CostEstimate) -> CostEstimate:
        costs = (self.cost_usd, other.cost_usd)
        return CostEstimate(
            model=self.model,
            conversations=self.conversations + other.conversations,
            requests=self.requests + other.requests,
            cached=self.cached + other.cached,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=None if None in costs else sum(c for c in costs if c is not None),
            expected_completion_tokens=self.expected_completion_tokens,
        )

    def assumptions(self) -> str:
        """What the estimate assumes, in one line for people."""
        return (
            f"assumes 1 token per {CHARS_PER_TOKEN} characters of prompt "
            f"(±{ESTIMATE_MARGIN:.0%} for English prose) and {self.expected_completion_tokens} "
            f"completion tokens per request, at {self.model}'s list price, no provider "
            "prompt-cache discount"
        )

    def describe(self) -> str:
        """The estimate in one line for people."""
        cost = (
            "unknown (no price for the model)"
            if self.cost_usd is None
            else (f"${self.cost_usd:.6f}")
        )
        return (
            f"{self.requests} request(s) to send ({self.cached} answered by the cache), "
            f"~{self.prompt_tokens:,} prompt + ~{self.completion_tokens:,} completion tokens, "
            f"estimated {cost}"
        )

    def as_metadata(self) -> dict[str, float | int | str]:
        metadata: dict[str, float | int | str] = {
            "llm_estimated_requests": self.requests,
            "llm_estimated_prompt_tokens": self.prompt_tokens,
            "llm_estimated_completion_tokens": self.completion_tokens,
            "llm_estimate_assumes": self.assumptions(),
        }
        if self.cost_usd is not None:
            metadata["llm_estimated_cost_usd"] = round(self.cost_usd, 6)
        return metadata
