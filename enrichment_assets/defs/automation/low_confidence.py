"""`low_confidence`: re-ask the conversations the low-confidence rule makes due.

Each tick looks at every batch partition's enriched conversations
(`low_confidence.candidates`: confidence below the threshold, last attempt older
than the rule's age, attempts left) and requests one run per partition that has
some: the enriched and normalized layers only, scoped to exactly those ids, with
`low_confidence: true` (escalation model if set, no cache, the better answer kept).
The run key names the partition, the ids and their attempt counts: the same due
set is never requested twice, and a new attempt makes a new key. A partition a
live command has claimed is left to it. With the heuristic enricher (deterministic)
the sensor asks nothing.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import polars as pl
from dagster import AssetKey, RunRequest, SensorEvaluationContext, SensorResult, sensor

from enrichment_assets import settings as env_settings
from enrichment_assets.defs.automation.new_raw_files import PIPELINE_JOB, TRIGGER_TAG
from enrichment_assets.defs.automation.settings import default_sensor_status, requested_run_config
from enrichment_assets.defs.resources import LakeResource, LLMResource
from enrichment_assets.enrichers.batch_ledger import read_batches
from enrichment_assets.lake import Lake
from enrichment_assets.locks import claimed_partitions
from enrichment_assets.low_confidence import LowConfidenceRule, candidates

LOW_CONFIDENCE_TRIGGER = "low_confidence"
REASKED_ASSETS = (AssetKey("enriched_conversations"), AssetKey("normalized_conversations"))
# Partitions with due conversations requested per tick at most (the rest wait a tick).
MAX_REQUESTS_PER_TICK = 20


def reask_request(partition: str, frame: pl.DataFrame) -> RunRequest:
    """The run that re-asks `frame`'s due conversations of `partition`."""
    ids = frame.get_column("conversation_id").to_list()
    attempts = frame.get_column("attempts").to_list()
    digest = hashlib.sha256(repr(sorted(zip(ids, attempts, strict=True))).encode()).hexdigest()
    return RunRequest(
        partition_key=partition,
        run_key=f"low-confidence:{partition}:{digest[:16]}",
        asset_selection=list(REASKED_ASSETS),
        run_config={
            **requested_run_config(),
            "ops": {
                "enriched_conversations": {
                    "config": {"conversation_ids": ids, "low_confidence": True}
                }
            },
        },
        tags={TRIGGER_TAG: LOW_CONFIDENCE_TRIGGER},
    )


def low_confidence_tick(
    context: SensorEvaluationContext, lake: Lake, rule: LowConfidenceRule, *, now: datetime
) -> SensorResult:
    """One evaluation of `low_confidence` at time `now` (injectable for tests)."""
    claimed = claimed_partitions(lake.data_dir)
    requests: list[RunRequest] = []
    waiting = exhausted = 0
    for partition in lake.registered_batches():
        if partition in claimed or read_batches(lake.data_dir, partition) is not None:
            continue  # a command is at it, or its LLM batches are out
        found = candidates(lake, partition, rule, now)
        if found.frame.height == 0:
            continue
        waiting, exhausted = waiting + found.waiting, exhausted + found.exhausted
        due = found.frame.filter(pl.col("due") & ~pl.col("exhausted"))
        if due.height and len(requests) < MAX_REQUESTS_PER_TICK:
            context.log.info(
                f"partition {partition}: {due.height} conversation(s) below confidence "
                f"{rule.below} re-asked"
                + (f" by {rule.escalation_model}" if rule.escalation_model else "")
            )
            requests.append(reask_request(partition, due))
    if not requests:
        return SensorResult(
            skip_reason=f"nothing due: {waiting} waiting for their age, {exhausted} out of attempts"
        )
    return SensorResult(run_requests=requests)


@sensor(
    name="low_confidence",
    job_name=PIPELINE_JOB,
    minimum_interval_seconds=env_settings.whole_number("ENRICH_LOW_CONFIDENCE_INTERVAL_S", 3600, 1),
    default_status=default_sensor_status(),
    description=(
        "Re-asks conversations whose confidence is below the threshold once their last "
        "attempt is old enough, up to the attempt limit, by the escalation model if set."
    ),
)
def low_confidence(
    context: SensorEvaluationContext, lake: LakeResource, enricher: LLMResource
) -> SensorResult:
    """Low-confidence conversations → scoped re-enrichment runs (LLM enrichers only)."""
    settings = enricher.settings()
    if settings.offline:  # deterministic: asking again gives the same answer
        return SensorResult(skip_reason="the heuristic enricher is deterministic: no re-asks")
    rule = LowConfidenceRule.from_settings(settings)
    return low_confidence_tick(context, lake.lake, rule, now=datetime.now(UTC))
