"""Which partitions a change of the annotation code version left stale, and why.

Dagster's rule (the one its UI shows as "updated code version"): a partition is stale
when the code version its latest materialization recorded (`dagster/code_version`) is
not the asset's current one; read here through the instance's public records. The
reason names what changed (`code_version.describe_change`). Used by `enrich run --stale`,
which re-enriches exactly those partitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Definitions

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
    """The materialized partitions of `key` whose latest materialization ran under another
    code version than the asset's current one (stale by its own code, not upstream data)."""
    if key not in defs.resolve_all_asset_keys():
        return []
    current = defs.resolve_assets_def(key).code_versions_by_key.get(key)
    if not current:
        return []  # no code version: Dagster never calls it stale by code
    stale = []
    for partition in sorted(instance.get_materialized_partitions(key)):
        recorded = _recorded_version(instance, key, partition)
        if recorded is None or recorded == current:
            continue  # no recorded version (no provenance) or the same code: not stale by code
        change = describe_change(recorded, current)
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
