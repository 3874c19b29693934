"""What keeps the daily summaries current: a schedule for yesterday, a sensor for late data.

- `summaries_daily` (schedule): shortly after midnight UTC (`ENRICH_SUMMARIES_SCHEDULE_MINUTE`,
  default 15 past), materializes the day that just ended.
- `stale_summaries` (sensor): a batch landed late can hold messages of a day already
  summarized. Each tick takes the normalized materializations recorded since its cursor
  (a bounded number, `ENRICH_STALE_SUMMARIES_MAX_BATCHES_PER_TICK`), asks DuckDB which
  UTC days their Parquet holds messages on, and re-requests each such day whose latest
  summary run could not have seen that batch (its `normalized_watermark` is older). The
  run's tags and the tick's log say which batches made the day stale.

The dynamic batch → daily mapping depends on the data (message timestamps), so no
partition mapping or automation condition can express it; the sensor computes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DefaultScheduleStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    build_schedule_from_partitioned_job,
    define_asset_job,
    sensor,
)

from enrichment_assets.assets.summaries import (
    ASSET_NAME,
    NORMALIZED_KEY,
    STALE_REASON_TAG,
    WATERMARK_KEY,
    conversation_summaries,
    register_normalized,
    summary_connection,
)
from enrichment_assets.automation.new_raw_files import TRIGGER_TAG
from enrichment_assets.automation.settings import default_sensor_status
from enrichment_assets.env import env_int
from enrichment_assets.lake import Lake
from enrichment_assets.partitions import summary_days
from enrichment_assets.resources import LakeResource
from enrichment_assets.sql_files import load_sql

SUMMARIES_JOB = "conversation_summaries_job"
SUMMARIES_KEY = AssetKey(ASSET_NAME)
STALE_BATCHES_TAG = "enrich/stale_batches"
_MAX_TAG_CHARS = 500

summaries_job = define_asset_job(
    SUMMARIES_JOB,
    selection=[conversation_summaries],
    partitions_def=summary_days,
    description="Summaries of one UTC day (per user, persona and window).",
)

summaries_daily = build_schedule_from_partitioned_job(
    summaries_job,
    name="summaries_daily",
    description="Shortly after midnight UTC: summarize the day that just ended.",
    hour_of_day=0,
    minute_of_hour=env_int("ENRICH_SUMMARIES_SCHEDULE_MINUTE", 15, minimum=0),
    default_status=DefaultScheduleStatus(default_sensor_status().value),
    tags={TRIGGER_TAG: "summaries_daily"},
)


@dataclass
class StaleDay:
    """A summarized day that newer batches hold messages on."""

    day: str
    summary_run_id: str
    batches: dict[str, int] = field(default_factory=dict)  # batch -> messages on the day
    newest_storage_id: int = 0

    def reason(self) -> str:
        listed = ", ".join(f"{batch} ({count} msgs)" for batch, count in self.batches.items())
        text = (
            f"late data: {len(self.batches)} batch(es) materialized after the summary of "
            f"{self.day} (run {self.summary_run_id[:8]}) hold {sum(self.batches.values())} "
            f"message(s) on that day: {listed}"
        )
        return text if len(text) <= _MAX_TAG_CHARS else text[: _MAX_TAG_CHARS - 1] + "…"


@dataclass
class StalePlan:
    stale: list[StaleDay]
    cursor: int
    notes: list[str]


def _summary_watermark(instance: DagsterInstance, day: str) -> tuple[int, str] | None:
    """(normalized watermark, run id) of the day's latest summary; None when never summarized."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=SUMMARIES_KEY, asset_partitions=[day]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    materialization = record.asset_materialization
    value = materialization.metadata.get(WATERMARK_KEY) if materialization else None
    # Without a recorded watermark, the summary saw at least what preceded its own event.
    watermark = int(value.value) if value is not None else record.storage_id
    return watermark, record.run_id


def plan_stale_days(
    instance: DagsterInstance, lake: Lake, after_storage_id: int, max_batches: int
) -> StalePlan:
    """The summarized days made stale by normalized batches materialized after the cursor."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=NORMALIZED_KEY, after_storage_id=after_storage_id),
        limit=max_batches,
        ascending=True,
    ).records
    if not records:
        return StalePlan([], after_storage_id, [])
    newest: dict[str, int] = {}
    for record in records:
        if record.partition_key is not None:
            newest[record.partition_key] = record.storage_id
    cursor = records[-1].storage_id
    notes = [
        f"{len(records)} normalized materialization(s) since the cursor: {len(newest)} batch(es)"
    ]

    con = summary_connection()
    try:
        register_normalized(con, [str(lake.layer_path("normalized", batch)) for batch in newest])
        touched = con.sql(load_sql("conversation_summaries_days")).fetchall()
    finally:
        con.close()

    days: dict[str, StaleDay] = {}
    watermarks: dict[str, tuple[int, str] | None] = {}
    for batch, day, messages in touched:
        if batch not in newest or not summary_days.has_partition_key(day):
            continue  # not a day partition yet (today) or before the start date
        if day not in watermarks:
            watermarks[day] = _summary_watermark(instance, day)
        seen = watermarks[day]
        if seen is None or newest[batch] <= seen[0]:
            continue  # never summarized (the schedule or a backfill will), or already seen
        stale = days.setdefault(day, StaleDay(day=day, summary_run_id=seen[1]))
        stale.batches[batch] = messages
        stale.newest_storage_id = max(stale.newest_storage_id, newest[batch])
    unsummarized = sorted(d for d, seen in watermarks.items() if seen is None)
    if unsummarized:
        notes.append(f"days never summarized, left to the schedule/backfills: {unsummarized}")
    return StalePlan(sorted(days.values(), key=lambda s: s.day), cursor, notes)


def run_request_for(stale: StaleDay) -> RunRequest:
    return RunRequest(
        partition_key=stale.day,
        # One run per day and newest batch: a repeated tick never requests it twice.
        run_key=f"stale-summary:{stale.day}:{stale.newest_storage_id}",
        tags={
            TRIGGER_TAG: "stale_summaries",
            STALE_REASON_TAG: stale.reason(),
            STALE_BATCHES_TAG: ", ".join(stale.batches)[:_MAX_TAG_CHARS],
        },
    )


def stale_summaries_tick(
    context: SensorEvaluationContext, lake: Lake, max_batches: int
) -> SensorResult:
    """One evaluation of `stale_summaries`; the cursor is the last storage id examined."""
    after = int(context.cursor) if context.cursor else 0
    plan = plan_stale_days(context.instance, lake, after, max_batches)
    for note in plan.notes:
        context.log.info(note)
    requests = [run_request_for(stale) for stale in plan.stale]
    for stale in plan.stale:
        context.log.info(f"{stale.day} is stale: {stale.reason()}")
    if not requests:
        skip = "no summarized day holds messages of a newer batch"
        return SensorResult(skip_reason=skip, cursor=str(plan.cursor))
    return SensorResult(run_requests=requests, cursor=str(plan.cursor))


@sensor(
    name="stale_summaries",
    job=summaries_job,
    minimum_interval_seconds=env_int("ENRICH_STALE_SUMMARIES_INTERVAL_S", 60),
    default_status=default_sensor_status(),
    description=(
        "Re-materializes summary days that a late batch holds messages on; the run's "
        "enrich/stale_reason tag says which batches made the day stale."
    ),
)
def stale_summaries(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
    """Late data → stale summary days → re-runs of those days."""
    max_batches = env_int("ENRICH_STALE_SUMMARIES_MAX_BATCHES_PER_TICK", 100)
    return stale_summaries_tick(context, lake.lake, max_batches)
