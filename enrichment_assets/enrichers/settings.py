"""Which enricher runs, and how it talks to its LLM endpoint.

Two doors to the same settings:
- `LLMSettings.from_env()`: the environment variables of README, "Configuration"
  (`ENRICH_ENRICHER`, `ENRICH_LLM_*`, `OPENAI_API_KEY` as the key's fallback);
- `LLMResource` (`enrichment_assets/defs/resources.py`): the Dagster resource with the same
  fields, so each can also be set as resource config in the UI; `LLMResource.from_env()`
  wires the key as an `EnvVar`, so Dagster stores the variable's name, never its value.
Both copy the fields by name (`SHARED_FIELDS`): a field is listed in each class once (with
its validation in `LLMSettings`, its UI description in `LLMResource`), never copied by hand.

The API key is a `SecretStr` in `LLMSettings` and hidden from the resource's
repr; error messages are scrubbed of it by the enricher.

What bounds a run against a faulty endpoint (see `retry.py`, `http_client.py`):
`timeout_s` is each attempt's total deadline, `max_attempts` each conversation's
attempts, `retry_budget_s` the seconds a run may wait on retries alone,
`breaker_window` the consecutive failed conversations that stop the run's
requests, `max_response_bytes` the cap on an answer's body.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from enrichment_assets import settings as env_settings
from enrichment_assets.enrichers.annotation import ModelPrice
from enrichment_assets.enrichers.base import Enricher
from enrichment_assets.enrichers.budget import SpendBudget
from enrichment_assets.enrichers.cache import open_enrichment_cache
from enrichment_assets.enrichers.defaults import (
    DEFAULT_BREAKER_WINDOW,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_RETRY_BUDGET_S,
)
from enrichment_assets.enrichers.pricing import DEFAULT_EXPECTED_COMPLETION_TOKENS
from enrichment_assets.redaction import DEFAULT_MODE, DEFAULT_PHONE_REGION, PiiMode

# List prices in USD per 1M tokens when this was written (input, provider-cached input,
# output); `ENRICH_LLM_PRICES` (JSON: {"model": {"input_per_1m": .., "output_per_1m": ..,
# "cached_input_per_1m": ..}}) adds or overrides.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(input_per_1m=0.15, output_per_1m=0.60, cached_input_per_1m=0.075),
    "gpt-4o": ModelPrice(input_per_1m=2.50, output_per_1m=10.00, cached_input_per_1m=1.25),
    "gpt-4.1": ModelPrice(input_per_1m=2.00, output_per_1m=8.00, cached_input_per_1m=0.50),
    "gpt-4.1-mini": ModelPrice(input_per_1m=0.40, output_per_1m=1.60, cached_input_per_1m=0.10),
    "gpt-4.1-nano": ModelPrice(input_per_1m=0.10, output_per_1m=0.40, cached_input_per_1m=0.025),
}

EnricherName = Literal["heuristic", "openai"]
# `batch`: the Batch API, submit-and-return (`batch_submission.py`: the run submits and
# ends, the `llm_batches` sensor applies the results); `batch_wait`: the Batch API polled
# inside the run until the batch ends (up to 25 h: for tests and small one-off runs).
LLMMode = Literal["online", "batch", "batch_wait"]


def parse_prices(text: str | None) -> dict[str, ModelPrice]:
    """DEFAULT_PRICES updated with the JSON override `text` (ValueError when malformed)."""
    prices = dict(DEFAULT_PRICES)
    if not text:
        return prices
    try:
        override = orjson.loads(text)
        prices.update({model: ModelPrice(**price) for model, price in override.items()})
    except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
        raise ValueError(
            "ENRICH_LLM_PRICES must be JSON like "
            '{"my-model": {"input_per_1m": 0.5, "output_per_1m": 1.5}}'
        ) from exc
    return prices


class LLMSettings(BaseModel):
    """The enricher choice and the LLM endpoint's settings (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    enricher: EnricherName = "heuristic"
    base_url: str | None = None  # None: api.openai.com
    model: str = "gpt-4o-mini"
    api_key: SecretStr | None = None
    concurrency: int = Field(default=16, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=6, ge=1)
    retry_budget_s: float = Field(default=DEFAULT_RETRY_BUDGET_S, ge=0)
    breaker_window: int = Field(default=DEFAULT_BREAKER_WINDOW, ge=0)  # 0: no breaker
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, ge=1024)
    rpm: int | None = Field(default=None, ge=1)  # None: unlimited
    tpm: int | None = Field(default=None, ge=1)
    mode: LLMMode = "online"
    prices: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    # Spend (`budget.py`, `pricing.py`): None is no limit.
    budget_usd: float | None = Field(default=None, ge=0)
    daily_budget_usd: float | None = Field(default=None, ge=0)
    expected_completion_tokens: int = Field(default=DEFAULT_EXPECTED_COMPLETION_TOKENS, ge=1)
    # Low-confidence re-enrichment (`low_confidence.py`).
    escalation_model: str | None = None  # None: re-ask the same model
    low_confidence_below: float = Field(default=0.7, ge=0, le=1)
    low_confidence_after_hours: float = Field(default=24.0, ge=0)
    low_confidence_max_attempts: int = Field(default=5, ge=1)

    @field_validator(
        "base_url",
        "api_key",
        "rpm",
        "tpm",
        "budget_usd",
        "daily_budget_usd",
        "escalation_model",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LLMSettings:
        """Read the `ENRICH_*` variables (README, "Configuration"); unset ones keep the defaults."""
        env = env_settings.environment() if env is None else env
        names = {
            "enricher": "ENRICH_ENRICHER",
            "base_url": "ENRICH_LLM_BASE_URL",
            "model": "ENRICH_LLM_MODEL",
            "concurrency": "ENRICH_LLM_CONCURRENCY",
            "timeout_s": "ENRICH_LLM_TIMEOUT_S",
            "max_attempts": "ENRICH_LLM_MAX_ATTEMPTS",
            "retry_budget_s": "ENRICH_LLM_RETRY_BUDGET_S",
            "breaker_window": "ENRICH_LLM_BREAKER_WINDOW",
            "max_response_bytes": "ENRICH_LLM_MAX_RESPONSE_BYTES",
            "rpm": "ENRICH_LLM_RPM",
            "tpm": "ENRICH_LLM_TPM",
            "mode": "ENRICH_LLM_MODE",
            "budget_usd": "ENRICH_LLM_BUDGET_USD",
            "daily_budget_usd": "ENRICH_LLM_DAILY_BUDGET_USD",
            "expected_completion_tokens": "ENRICH_LLM_EXPECTED_COMPLETION_TOKENS",
            "escalation_model": "ENRICH_LLM_ESCALATION_MODEL",
            "low_confidence_below": "ENRICH_LOW_CONFIDENCE_BELOW",
            "low_confidence_after_hours": "ENRICH_LOW_CONFIDENCE_AFTER_HOURS",
            "low_confidence_max_attempts": "ENRICH_LOW_CONFIDENCE_MAX_ATTEMPTS",
        }
        values: dict[str, Any] = {
            field: env[name].strip() for field, name in names.items() if env.get(name, "").strip()
        }
        values["api_key"] = env.get("ENRICH_LLM_API_KEY") or env.get("OPENAI_API_KEY")
        values["prices"] = parse_prices(env.get("ENRICH_LLM_PRICES"))
        return cls(**values)

    @property
    def offline(self) -> bool:
        """True for the heuristic enricher: deterministic and stateless, it spends nothing,
        sends nothing and gives the same answer when asked again."""
        return self.enricher == "heuristic"

    @property
    def submits_batches(self) -> bool:
        """True in the submit-and-return Batch API mode (`batch_submission.py`)."""
        return self.enricher == "openai" and self.mode == "batch"

    def build_enricher(
        self,
        cache_dir: Path | None = None,
        budget: SpendBudget | None = None,
        *,
        pii_mode: PiiMode = DEFAULT_MODE,
        phone_region: str = DEFAULT_PHONE_REGION,
        app_db_url: str | None = None,
    ) -> Enricher:
        """The configured enricher; the `openai` one caches when `cache_dir` is given (in
        the application database at `app_db_url` when set, else under `cache_dir`), stops
        sending once `budget` is spent and redacts what it sends unless `pii_mode` is
        `off` (the heuristic sends nothing)."""
        if self.enricher == "heuristic":
            # Imported here: the heuristic enricher must not pay for the OpenAI stack, and
            # the OpenAI settings must load even where the heuristic module is absent.
            from enrichment_assets.enrichers.heuristic import HeuristicEnricher

            return HeuristicEnricher()
        # Imported here too: a heuristic run never loads the OpenAI client (40 MB).
        from enrichment_assets.enrichers.openai import OpenAIEnricher
        from enrichment_assets.enrichers.retry import RetryPolicy

        return OpenAIEnricher(
            model=self.model,
            base_url=self.base_url,
            api_key=self.api_key,
            concurrency=self.concurrency,
            timeout_s=self.timeout_s,
            retry=RetryPolicy(max_attempts=self.max_attempts),
            retry_budget_s=self.retry_budget_s,
            breaker_window=self.breaker_window,
            max_response_bytes=self.max_response_bytes,
            rpm=self.rpm,
            tpm=self.tpm,
            mode="online" if self.mode == "online" else "batch",
            price=self.prices.get(self.model),
            cache=open_enrichment_cache(cache_dir, app_db_url) if cache_dir is not None else None,
            budget=budget,
            expected_completion_tokens=self.expected_completion_tokens,
            pii_mode=pii_mode,
            phone_region=phone_region,
        )


# The fields `LLMSettings` and `LLMResource` carry alike, copied by name from one to the
# other; the key (a SecretStr there, an EnvVar here) and the prices (parsed there, JSON
# here) are the two carried differently.
SHARED_FIELDS = tuple(n for n in LLMSettings.model_fields if n not in ("api_key", "prices"))


def enricher_kinds(settings: LLMSettings) -> set[str]:
    """The Dagster kinds of an asset that annotates with the configured enricher
    (`ENRICH_ENRICHER`): `openai` for the OpenAI-compatible endpoint, `heuristic` offline."""
    return {settings.enricher}


def enricher_tags(settings: LLMSettings) -> dict[str, str]:
    """Asset tags naming the configured enricher (and the model when it calls one)."""
    tags = {"enrich/enricher": settings.enricher}
    if settings.enricher == "openai":
        model = "".join(c if c.isalnum() or c in "-_." else "_" for c in settings.model)
        tags["enrich/model"] = model[:63]
    return tags
