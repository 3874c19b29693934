"""`enrich run --dry-run`: what the runs would cost, without sending a request.

The partitions are landed and validated (raw and validated layers: no LLM work),
then each one's validated conversations are estimated as the enriched asset would
estimate them before sending (`defs/spend/llm_spend.py`, `enrichers/pricing.py`),
cache hits included, and compared with the configured budgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import AssetKey, DagsterInstance

from enrichment_assets.cli.runner import QUIET_RUN_CONFIG, PartitionOutcome, _execute
from enrichment_assets.defs.spend.llm_spend import committed_to_batches, daily_left, estimate_layer
from enrichment_assets.enrichers.budget import run_limit
from enrichment_assets.enrichers.pricing import CostEstimate
from enrichment_assets.enrichers.settings import LLMSettings
from enrichment_assets.lake import Lake

# The layers a dry run materializes: parsing and validation only.
FREE_ASSETS = ("raw_conversations", "validated_conversations")


@dataclass
class PartitionEstimate:
    partition: str
    estimate: CostEstimate | None  # None: not validated, or an enricher that costs nothing
    problem: str | None = None

    def over(self, limit: float | None) -> bool:
        cost = self.estimate.cost_usd if self.estimate else None
        return limit is not None and cost is not None and cost > limit


@dataclass
class DryRun:
    partitions: list[PartitionEstimate]
    run_limit_usd: float | None  # what one run may spend now (budget, daily rest)
    settings: LLMSettings

    @property
    def total(self) -> CostEstimate | None:
        estimates = [p.estimate for p in self.partitions if p.estimate is not None]
        if not estimates:
            return None
        total = estimates[0]
        for estimate in estimates[1:]:
            total = total + estimate
        return total


def dry_run(
    instance: DagsterInstance, lake: Lake, partitions: list[str], settings: LLMSettings
) -> DryRun:
    """Validate `partitions` and estimate their enrichment; nothing is sent."""
    cache_dir = lake.data_dir / "cache" / "enrichment"
    annotator = settings.build_enricher(cache_dir, app_db_url=lake.app_db_url)
    estimates = []
    for key in dict.fromkeys(partitions):
        outcome: PartitionOutcome = _execute(
            instance,
            key,
            tags={},
            run_config=QUIET_RUN_CONFIG,
            asset_selection=[AssetKey(name) for name in FREE_ASSETS],
        )
        source = lake.layer_path("validated", key)
        if not outcome.success or not source.exists():
            problem = outcome.error or "not validated"
            estimates.append(PartitionEstimate(key, None, problem))
            continue
        estimates.append(PartitionEstimate(key, estimate_layer(annotator, source, 10_000)))
    now = datetime.now(UTC)
    committed = committed_to_batches(settings, lake.data_dir)  # batches out, at their estimate
    limit = run_limit(settings.budget_usd, daily_left(instance, settings, now, committed))
    return DryRun(estimates, limit, settings)
