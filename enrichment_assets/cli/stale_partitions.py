"""Which partitions a change of the annotation code version left stale, and why.

Dagster decides (its stale-status resolver, the one the UI uses): a partition is
stale when the code version it was materialized under is not the asset's current
one. The reason names what changed (`code_version.describe_change`). Used by
`enrich run --stale`, which re-enriches exactly those partitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Definitions
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import (
    CachingStaleStatusResolver,
    StaleCauseCategory,
    StaleStatus,
)
from dagster._time import get_current_datetime

from enrichment_assets.enrichers.code_version import describe_change

if TYPE_CHECKING:
    from enrichment_assets.cli.runner import PartitionOutcome

ENRICHED = AssetKey("enriched_conversations")
SUMMARIES = AssetKey("conversation_summaries")
CODE_VERSION_TAG = "dagster/code_version"


@dataclass(frozen=True)
class StalePartition:
    asset: str
    partition: str
    reason: str  # Dagster's stale cause, then what changed


def _recorded_version(instance: DagsterInstance, key: AssetKey, partition: str) -> str | None:
    page = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    )
    for record in page.records:
        materialization = record.asset_materialization
        if materialization is not None:
            return (materialization.tags or {}).get(CODE_VERSION_TAG)
    return None


def stale_partitions(
    instance: DagsterInstance, defs: Definitions, key: AssetKey = ENRICHED
) -> list[StalePartition]:
    """The materialized partitions of `key` that Dagster reports stale by code version."""
    graph = defs.resolve_asset_graph()
    if not graph.has(key):
        return []
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance, graph, view)
    current = graph.get(key).code_version or ""
    stale = []
    for partition in sorted(instance.get_materialized_partitions(key)):
        if resolver.get_status(key, partition) != StaleStatus.STALE:
            continue
        causes = resolver.get_stale_causes(key, partition)
        if not any(
            cause.category == StaleCauseCategory.CODE
            and getattr(cause.key, "asset_key", cause.key) == key
            for cause in causes
        ):
            continue  # stale for another reason (upstream data): not ours to re-enrich
        change = describe_change(_recorded_version(instance, key, partition), current)
        stale.append(StalePartition(key.to_user_string(), partition, f"new code version: {change}"))
    return stale


# The runs `enrich run --stale` requests carry this tag: filter on it in the UI.
STALE_TAG = "enrich/stale_reenrichment"


def reenrich_stale(
    instance: DagsterInstance,
    defs: Definitions,
    *,
    on_done: Callable[[PartitionOutcome], None] | None = None,
) -> tuple[list[StalePartition], list[PartitionOutcome]]:
    """Re-enrich exactly the stale partitions: enriched and normalized layers of each stale
    batch, then each stale summary day; one in-process run each, tagged `STALE_TAG`."""
    from enrichment_assets.cli.runner import QUIET_RUN_CONFIG, REENRICHED_ASSETS, _execute
    from enrichment_assets.defs.summaries.automation import SUMMARIES_JOB

    batches = stale_partitions(instance, defs, ENRICHED)
    outcomes = []
    for stale in batches:
        outcome = _execute(
            instance,
            stale.partition,
            tags={STALE_TAG: "code_version"},
            run_config=QUIET_RUN_CONFIG,
            asset_selection=[AssetKey(name) for name in REENRICHED_ASSETS],
            definitions=defs,
        )
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    # The summary days: found after the batches, which may not have made any of them stale.
    days = stale_partitions(instance, defs, SUMMARIES)
    for stale in days:
        outcome = _execute(
            instance,
            stale.partition,
            tags={STALE_TAG: "code_version"},
            run_config=QUIET_RUN_CONFIG,
            job_name=SUMMARIES_JOB,
            definitions=defs,
        )
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return batches + days, outcomes
