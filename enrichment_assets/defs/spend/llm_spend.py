"""The spend of an enrichment run: its estimate, its limit, the refusal before sending.

Before the enriched asset sends anything it estimates what its partition will cost
(`enrichers/pricing.py`) and compares it with what the run may spend: the run's
budget (`ENRICH_LLM_BUDGET_USD`) and what is left today of the daily limit
(`ENRICH_LLM_DAILY_BUDGET_USD`), today's spend being the sum of `llm_cost_usd` of
the LLM assets' materializations since the UTC day began, read from the Dagster
instance (so every process of the deployment counts). Over it, the run fails in
one line and nothing is sent; under it, the enricher gets a `SpendBudget` that
stops sending when the measured spend reaches the limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Failure

from enrichment_assets.defs.conversations.layer_io import read_chunks
from enrichment_assets.enrichers.base import Enricher
from enrichment_assets.enrichers.batch_ledger import open_submissions
from enrichment_assets.enrichers.budget import OVER_BUDGET, SpendBudget, run_limit, window_start
from enrichment_assets.enrichers.pricing import CostEstimate
from enrichment_assets.enrichers.settings import LLMSettings

# The assets whose materializations spend on the LLM (their `llm_cost_usd` metadata).
SPENDING_ASSETS = (AssetKey("enriched_conversations"), AssetKey("conversation_summaries"))
_PAGE = 1000


def spent_since(instance: DagsterInstance, since: datetime) -> float:
    """USD the LLM assets' materializations recorded since `since`."""
    total = 0.0
    for key in SPENDING_ASSETS:
        cursor = None
        while True:
            page = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, after_timestamp=since.timestamp()),
                limit=_PAGE,
                cursor=cursor,
            )
            for record in page.records:
                materialization = record.asset_materialization
                cost = materialization.metadata.get("llm_cost_usd") if materialization else None
                if cost is not None:
                    total += float(cost.value)  # type: ignore[arg-type]
            if not page.has_more:
                break
            cursor = page.cursor
    return total


def daily_left(
    instance: DagsterInstance, settings: LLMSettings, now: datetime, committed_usd: float = 0.0
) -> float | None:
    """What the daily limit leaves for today (None: no daily limit), `committed_usd` (the
    estimates of LLM batches submitted and not applied yet) counted as spent."""
    if settings.daily_budget_usd is None:
        return None
    return settings.daily_budget_usd - spent_since(instance, window_start(now)) - committed_usd


def committed_to_batches(
    settings: LLMSettings, data_dir: Path, *, besides: str | None = None
) -> float:
    """The estimates of the LLM batches that are out (`enrichers/batch_ledger.py`), but
    `besides`'s: paid when applied, counted against the daily limit meanwhile (0 when
    there is no daily limit: nothing to count them against)."""
    if settings.daily_budget_usd is None:
        return 0.0
    return sum(
        record.estimate_usd or 0.0
        for record in open_submissions(data_dir)
        if record.partition != besides
    )


def estimate_layer(
    annotator: Enricher, source: Path, chunk_rows: int, ids: Iterable[str] | None = None
) -> CostEstimate | None:
    """The cost estimate of annotating the conversations of a layer file (only `ids` when
    given); None when the enricher sends nothing that costs (the heuristic)."""
    estimate_chunk = getattr(annotator, "estimate", None)
    if estimate_chunk is None:
        return None
    wanted = None if ids is None else list(ids)
    total: CostEstimate | None = None
    for chunk in read_chunks(source, chunk_rows):
        chunk = chunk.unique("conversation_id", keep="first", maintain_order=True)
        if wanted is not None:
            chunk = chunk.filter(pl.col("conversation_id").is_in(wanted))
        part = estimate_chunk(chunk)
        total = part if total is None else total + part
    return total


def run_budget(
    instance: DagsterInstance,
    settings: LLMSettings,
    estimate: CostEstimate | None,
    *,
    now: datetime | None = None,
    committed_usd: float = 0.0,
) -> SpendBudget:
    """The run's `SpendBudget`; raises `Failure` (one line, nothing sent) when the estimate
    is over what the run may spend, or a limit is set and the model has no price."""
    now = now or datetime.now(UTC)
    limit = run_limit(settings.budget_usd, daily_left(instance, settings, now, committed_usd))
    if limit is None or estimate is None or estimate.requests == 0:
        return SpendBudget(limit)
    if estimate.cost_usd is None:
        raise Failure(
            description=f"{OVER_BUDGET}: a budget is set but no price is known for model "
            f"{estimate.model!r}; set ENRICH_LLM_PRICES",
            allow_retries=False,
        )
    if estimate.cost_usd > limit:
        raise Failure(
            description=f"{OVER_BUDGET}: estimated ${estimate.cost_usd:.6f} > ${limit:.6f} "
            f"this run may spend; nothing sent ({estimate.describe()}; {estimate.assumptions()})",
            metadata=estimate.as_metadata(),
            allow_retries=False,
        )
    return SpendBudget(limit)
