"""What keeps the daily summaries current: a schedule for yesterday, a sensor for late data.

Day partitions are dynamic (`partitions.summary_days`): a day exists once it is over and
holds messages. Both register the days they find before requesting them.

- `summaries_daily` (schedule): shortly after midnight UTC (`ENRICH_SUMMARIES_SCHEDULE_MINUTE`,
  default 15 past), registers and materializes the day that just ended, when a batch holds
  messages on it (else the tick is skipped, and no empty day appears).
- `stale_summaries` (sensor): a batch landed late can hold messages of a day already
  summarized. Each tick takes the normalized materializations recorded since its cursor
  (a bounded number, `ENRICH_STALE_SUMMARIES_MAX_BATCHES_PER_TICK`), asks DuckDB which
  UTC days their Parquet holds messages on, and re-requests each such day whose latest
  summary run could not have seen that batch (its `normalized_watermark` is older). The
  run's tags and the tick's log say which batches made the day stale. Days it finds that
  are not partitions yet are registered (shown in the UI, left to the schedule or a backfill).

The dynamic batch → daily mapping depends on the data (message timestamps), so no
partition mapping or automation condition can express it; the sensor computes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetRecordsFilter,
    DagsterInstance,
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)

from enrichment_assets import settings as env_settings
from enrichment_assets.defs.automation.new_raw_files import TRIGGER_TAG
from enrichment_assets.defs.automation.settings import default_sensor_status
from enrichment_assets.defs.conversations.partitions import (
    is_summary_day,
    register_summary_days,
    summary_days,
)
from enrichment_assets.defs.resources import LakeResource, LLMResource
from enrichment_assets.defs.run_liveness import UNFINISHED_RUN_STATUSES
from enrichment_assets.defs.summaries.assets import (
    NORMALIZED_KEY,
    STALE_REASON_TAG,
    SUMMARIES_KEY,
    WATERMARK_KEY,
    conversation_summaries,
)
from enrichment_assets.lake import Lake
from enrichment_assets.sql_files import load_sql
from enrichment_assets.summary_inputs import DayInputs, days_of_batches
from enrichment_assets.summary_windows import (
    default_windows,
    register_normalized,
    summary_connection,
)

SUMMARIES_JOB = "conversation_summaries_job"
STALE_BATCHES_TAG = "enrich/stale_batches"
# The run tags Dagster sets on a partition's runs, and on a run over a range of partitions
# (documented; their constants are private).
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
_MAX_TAG_CHARS = 500

summaries_job = define_asset_job(
    SUMMARIES_JOB,
    selection=[conversation_summaries],
    partitions_def=summary_days,
    description="Summaries of UTC days (per user, persona and window): one day, or a range "
    "of days read in one scan of the normalized layer.",
)

SCHEDULE_MINUTE = env_settings.whole_number("ENRICH_SUMMARIES_SCHEDULE_MINUTE", 15, minimum=0)


def summary_days_of(lake: Lake, partitions: Iterable[str]) -> list[str]:
    """The summary days (UTC days that are over, `is_summary_day`) on which these batches'
    normalized Parquet holds summarizable messages, by DuckDB (or the memo of an earlier
    answer, `summary_inputs.days_of_batches`); today is not one until it ends."""

    def scan(batches: list[str]) -> dict[str, list[str]]:
        con = summary_connection()
        try:
            register_normalized(con, [str(lake.layer_path("normalized", b)) for b in batches])
            touched = con.sql(load_sql("conversation_summaries_days")).fetchall()
        finally:
            con.close()
        days: dict[str, list[str]] = {}
        for batch, day, _ in touched:
            days.setdefault(batch, []).append(day)
        return days

    return [day for day in days_of_batches(lake, partitions, scan) if is_summary_day(day)]


def days_with_messages(lake: Lake, since: datetime) -> list[str]:
    """The summary days (over, `is_summary_day`) on which batches normalized since `since`
    hold messages: a day's messages are in batches written on that day or later."""
    cutoff = since.timestamp()
    recent = [
        batch
        for batch in lake.registered_batches()
        if (path := lake.layer_path("normalized", batch)).exists()
        and path.stat().st_mtime >= cutoff
    ]
    return summary_days_of(lake, recent) if recent else []


@schedule(
    name="summaries_daily",
    job=summaries_job,
    cron_schedule=f"{SCHEDULE_MINUTE} 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus(default_sensor_status().value),
    description="Shortly after midnight UTC: summarize the day that just ended, when it "
    "holds messages (the day partition is registered then).",
)
def summaries_daily(
    context: ScheduleEvaluationContext, lake: LakeResource
) -> RunRequest | SkipReason:
    """Yesterday (UTC), registered as a day partition and requested, when it has messages."""
    now = context.scheduled_execution_time or datetime.now(UTC)
    day_start = datetime.combine(
        now.astimezone(UTC).date() - timedelta(days=1), datetime.min.time(), UTC
    )
    day = day_start.date().isoformat()
    if not context.instance.has_dynamic_partition(summary_days.name, day):
        if day not in days_with_messages(lake.lake, day_start):
            return SkipReason(f"no batch holds messages on {day}: no summary day to run")
        register_summary_days(context.instance, [day])
    return RunRequest(
        partition_key=day, run_key=f"summaries_daily:{day}", tags={TRIGGER_TAG: "summaries_daily"}
    )


@dataclass
class StaleDay:
    """A summarized day that newer batches hold messages on."""

    day: str
    summary_run_id: str
    batches: dict[str, int] = field(default_factory=dict)  # batch -> messages on the day
    newest_storage_id: int = 0
    batch_storage_ids: list[int] = field(default_factory=list)
    inputs: str = ""  # the fingerprint of the day's inputs (`summary_inputs.py`)

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
    new_days: list[str] = field(default_factory=list)  # day partitions to register


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
    instance: DagsterInstance,
    lake: Lake,
    after_storage_id: int,
    max_batches: int,
    inputs: DayInputs,
) -> StalePlan:
    """The summarized days made stale by normalized batches materialized after the cursor;
    `inputs`: the settings a day's summaries depend on (its fingerprint's)."""
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
        if batch not in newest or not is_summary_day(day):
            continue  # not over yet (today), or before ENRICH_SUMMARIES_START_DATE
        if day not in watermarks:
            watermarks[day] = _summary_watermark(instance, day)
        seen = watermarks[day]
        if seen is None or newest[batch] <= seen[0]:
            continue  # never summarized (the schedule or a backfill will), or already seen
        stale = days.setdefault(day, StaleDay(day=day, summary_run_id=seen[1]))
        stale.batches[batch] = messages
        stale.newest_storage_id = max(stale.newest_storage_id, newest[batch])
        stale.batch_storage_ids.append(newest[batch])
    cursor = _settle(instance, lake, days, notes, cursor, inputs)
    unsummarized = sorted(d for d, seen in watermarks.items() if seen is None)
    if unsummarized:
        notes.append(f"days never summarized, left to the schedule/backfills: {unsummarized}")
    new_days = sorted(
        d
        for d, seen in watermarks.items()
        if seen is None and not instance.has_dynamic_partition(summary_days.name, d)
    )
    if new_days:
        notes.append(f"new summary day partitions: {new_days}")
    return StalePlan(sorted(days.values(), key=lambda s: s.day), cursor, notes, new_days)


def run_days(tags: Mapping[str, str], order: list[str]) -> list[str]:
    """The day partitions a run of the summaries covers, from its tags: its partition, or
    every day of its range (a backfill's single run, `enrich run`) in `order`, the
    instance's order of day partitions."""
    if (day := tags.get(PARTITION_TAG)) is not None:
        return [day]
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start not in order or end not in order:
        return []
    return order[order.index(start) : order.index(end) + 1]


def _days_in_progress(instance: DagsterInstance) -> set[str]:
    """The days a run of the summaries is queued or going for (from any trigger: this job,
    or the asset materialized from the UI), alone or within a range of days."""
    runs = [
        run
        for run in instance.get_runs(RunsFilter(statuses=UNFINISHED_RUN_STATUSES), limit=200)
        if run.job_name == SUMMARIES_JOB or SUMMARIES_KEY in (run.asset_selection or ())
    ]
    if not runs:
        return set()
    order = list(summary_days.get_partition_keys(None, instance))
    return {day for run in runs for day in run_days(run.tags, order)}


def _settle(
    instance: DagsterInstance,
    lake: Lake,
    days: dict[str, StaleDay],
    notes: list[str],
    cursor: int,
    inputs: DayInputs,
) -> int:
    """Drop the stale days whose inputs did not change since their files were published (a
    late batch that only repeats what the day had), and defer those with a run in progress
    (never two runs of one day at once): the cursor stays before their batches, so a later
    tick looks at them again. Returns the cursor."""
    from enrichment_assets.summary_inputs import changed_days

    changed = changed_days(lake, days, inputs.windows, inputs.llm)
    busy = _days_in_progress(instance)
    for day in sorted(days):
        if day not in changed:
            notes.append(f"{day}: inputs unchanged since its summaries were published")
            del days[day]
        elif day in busy:
            notes.append(f"{day}: a run of it is in progress; looked at again next tick")
            cursor = min(cursor, min(days.pop(day).batch_storage_ids) - 1)
        else:
            days[day].inputs = changed[day]
    return cursor


def run_request_for(stale: StaleDay) -> RunRequest:
    return RunRequest(
        partition_key=stale.day,
        # One run per day and inputs: a repeated tick never requests the same work twice.
        run_key=f"stale-summary:{stale.day}:{stale.inputs[:16]}",
        tags={
            TRIGGER_TAG: "stale_summaries",
            STALE_REASON_TAG: stale.reason(),
            STALE_BATCHES_TAG: ", ".join(stale.batches)[:_MAX_TAG_CHARS],
        },
    )


def stale_summaries_tick(
    context: SensorEvaluationContext, lake: Lake, max_batches: int, inputs: DayInputs
) -> SensorResult:
    """One evaluation of `stale_summaries`; the cursor is the last storage id examined."""
    after = int(context.cursor) if context.cursor else 0
    plan = plan_stale_days(context.instance, lake, after, max_batches, inputs)
    for note in plan.notes:
        context.log.info(note)
    requests = [run_request_for(stale) for stale in plan.stale]
    for stale in plan.stale:
        context.log.info(f"{stale.day} is stale: {stale.reason()}")
    new_days = [summary_days.build_add_request(plan.new_days)] if plan.new_days else []
    if not requests:
        skip = "no summarized day holds messages of a newer batch"
        return SensorResult(
            skip_reason=skip, cursor=str(plan.cursor), dynamic_partitions_requests=new_days
        )
    return SensorResult(
        run_requests=requests, cursor=str(plan.cursor), dynamic_partitions_requests=new_days
    )


@sensor(
    name="stale_summaries",
    job=summaries_job,
    minimum_interval_seconds=env_settings.whole_number("ENRICH_STALE_SUMMARIES_INTERVAL_S", 60),
    default_status=default_sensor_status(),
    description=(
        "Re-materializes summary days that a late batch holds messages on; the run's "
        "enrich/stale_reason tag says which batches made the day stale."
    ),
)
def stale_summaries(
    context: SensorEvaluationContext, lake: LakeResource, enricher: LLMResource
) -> SensorResult:
    """Late data → stale summary days → re-runs of those days (in the asset's default
    windows and the configured enricher: what a requested run computes with)."""
    max_batches = env_settings.whole_number("ENRICH_STALE_SUMMARIES_MAX_BATCHES_PER_TICK", 100)
    inputs = DayInputs(windows=default_windows(), llm=enricher.settings())
    return stale_summaries_tick(context, lake.lake, max_batches, inputs)
