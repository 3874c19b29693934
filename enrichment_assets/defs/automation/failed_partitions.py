"""`failed_partitions`: re-request unhealthy batch partitions with backoff, then hand over.

A partition is unhealthy when its latest finished run failed, when a blocking
gate (asset check) of that run failed, or when its enriched rows still carry an
enrichment error with NULL AI fields. The sensor retries it after 1 min, 5 min,
15 min, 1 h and 4 h (`RetrySettings`); when the last try fails too, the
partition is flagged for a person (`retry_state.flagged_partitions`, an asset
observation on `enriched_conversations`) and left alone until someone
re-materializes it: a run without this sensor's tags resets the count.

A partition whose run succeeded and left LLM batches out (the Batch API mode) is not
unhealthy: the `llm_batches` sensor applies them. The run that does carries the retry
count of the run that submitted them, so the tries go on counting across batches.

Each retry has its own run key (`retry:<partition>:<failed run id>`): a sensor
never requests the same run key twice, so a key per failure is what lets a
partition be retried at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import polars as pl
from dagster import (
    AssetKey,
    AssetObservation,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    MetadataValue,
    RunRecord,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from enrichment_assets.defs.automation.new_raw_files import PIPELINE_JOB, TRIGGER_TAG
from enrichment_assets.defs.automation.retry_state import read_retries, write_retries
from enrichment_assets.defs.automation.settings import (
    RetrySettings,
    default_sensor_status,
    requested_run_config,
    retry_interval_seconds,
)
from enrichment_assets.defs.conversations.partitions import batch_partitions
from enrichment_assets.defs.resources import LakeResource
from enrichment_assets.defs.run_liveness import recover_dead_runs
from enrichment_assets.enrichers.batch_ledger import read_batches
from enrichment_assets.enrichers.budget import BUDGET_EXHAUSTED, OVER_BUDGET, next_window
from enrichment_assets.lake import Lake
from enrichment_assets.locks import claimed_partitions
from enrichment_assets.partition_retry import (
    BUDGET_STOPPED,
    GATE_FAILED,
    NEVER_RAN,
    NULL_AI_FIELDS,
    RUN_FAILED,
    PartitionRetry,
)

PARTITION_TAG = "dagster/partition"
RETRY_TRIGGER = "failed_partitions"
ATTEMPT_TAG = "enrich/retry_attempt"
REASON_TAG = "enrich/retry_reason"
RETRY_OF_TAG = "enrich/retry_of"
LLM_BATCH_TRIGGER = "llm_batches"  # the trigger of the runs `llm_batches.py` requests
FLAGGED_ASSET = AssetKey("enriched_conversations")
CURSOR_VERSION = 1
# A run in one of these states is over: its outcome can be judged.
FINISHED_STATUSES = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


@dataclass(frozen=True)
class Verdict:
    reason: str
    detail: str


def _one_line(text: str, limit: int = 300) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def run_problems(instance: DagsterInstance, run_id: str) -> tuple[list[str], str | None]:
    """The blocking checks that failed in this run, and its first step failure (one line)."""
    records = instance.get_records_for_run(
        run_id,
        of_type={DagsterEventType.ASSET_CHECK_EVALUATION, DagsterEventType.STEP_FAILURE},
    ).records
    gates: list[str] = []
    step_error: str | None = None
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if (
                not evaluation.passed
                and evaluation.blocking
                and evaluation.severity.value == "ERROR"
            ):
                gates.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
        elif step_error is None and event.event_specific_data is not None:
            error = event.event_specific_data.error
            while error is not None and error.cause is not None:
                error = error.cause
            message = _one_line(error.message) if error is not None else "see the run's logs"
            step_error = f"step {event.step_key} failed: {message}"
    return gates, step_error


def null_ai_rows(lake: Lake, partition: str) -> int:
    """Enriched rows whose annotation failed: AI fields NULL and `enrichment.error` set."""
    path = lake.layer_path("enriched", partition)
    if not path.exists():
        return 0
    error = pl.col("enrichment").struct.field("error")
    return int(pl.scan_parquet(path).select(error.is_not_null().sum()).collect().item())


def budget_stopped_rows(lake: Lake, partition: str) -> int:
    """Enriched rows the run's LLM budget kept from being sent (`budget exhausted`)."""
    path = lake.layer_path("enriched", partition)
    if not path.exists():
        return 0
    error = pl.col("enrichment").struct.field("error")
    return int(pl.scan_parquet(path).select((error == BUDGET_EXHAUSTED).sum()).collect().item())


def assess_run(instance: DagsterInstance, lake: Lake, record: RunRecord) -> Verdict | None:
    """Why the partition of this finished run needs another try, or None when it is healthy."""
    run = record.dagster_run
    if run.status == DagsterRunStatus.CANCELED:
        return None  # someone stopped it on purpose: not ours to restart
    gates, step_error = run_problems(instance, run.run_id)
    if gates:
        return Verdict(GATE_FAILED, "blocking gate(s) failed: " + ", ".join(gates))
    if run.status == DagsterRunStatus.FAILURE:
        if step_error is not None and f"{OVER_BUDGET}: " in step_error:
            return Verdict(BUDGET_STOPPED, step_error)
        return Verdict(RUN_FAILED, step_error or "the run failed: see its logs")
    if read_batches(lake.data_dir, run.tags[PARTITION_TAG]) is not None:
        return None  # its LLM batches are out: the llm_batches sensor applies them
    stopped = budget_stopped_rows(lake, run.tags[PARTITION_TAG])
    if stopped:
        return Verdict(BUDGET_STOPPED, f"{stopped} conversation(s) not sent: {BUDGET_EXHAUSTED}")
    missing = null_ai_rows(lake, run.tags[PARTITION_TAG])
    if missing:
        return Verdict(
            NULL_AI_FIELDS, f"{missing} enriched row(s) with NULL AI fields and an error"
        )
    return None


def tries_of(record: RunRecord) -> int:
    """Which retry this run was (0 for a run this sensor did not request: a reset)."""
    tags = record.dagster_run.tags
    # An apply run of LLM batches carries the retry tags of the run that submitted them.
    if tags.get(TRIGGER_TAG) not in (RETRY_TRIGGER, LLM_BATCH_TRIGGER):
        return 0
    try:
        return int(tags.get(ATTEMPT_TAG, "0"))
    except ValueError:
        return 0


def _parse_cursor(raw: str | None) -> dict:
    """{"updated_after": newest finished run seen, "confirmed": partitions known to have run
    (a prefix of the instance's partition list)}; {} when absent or unreadable."""
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(data, dict) or data.get("v") != CURSOR_VERSION:
        return {}
    return data


def never_ran_requests(
    instance: DagsterInstance,
    lake: Lake,
    confirmed: int,
    settings: RetrySettings,
    *,
    now: datetime,
    log: logging.Logger,
) -> tuple[list[RunRequest], int]:
    """Runs for partitions that were registered but never ran (a command that died before
    it got to them), and the new count of partitions known to have run.

    Looks at a window of partitions past those already confirmed; a partition claimed by a
    live command (`locks.claim`) or registered less than `never_ran_grace_s` ago is left
    to its command.
    """
    keys = instance.get_dynamic_partitions(batch_partitions.name)
    window = keys[confirmed : confirmed + settings.never_ran_window]
    if not window:
        return [], confirmed
    latest = latest_runs(instance, window)
    advance = 0
    for key in window:
        if key not in latest:
            break
        advance += 1
    claimed = claimed_partitions(lake.data_dir)
    requests = []
    for key in window:
        if key in latest or key in claimed or not lake.manifest_path(key).exists():
            continue
        registered = datetime.fromisoformat(lake.load_manifest(key).registered_at)
        if (now - registered).total_seconds() < settings.never_ran_grace_s:
            continue
        log.info(f"partition {key}: registered at {registered.isoformat()} and never ran")
        requests.append(
            RunRequest(
                partition_key=key,
                run_key=f"first-run:{key}",
                run_config=requested_run_config(),
                tags={TRIGGER_TAG: RETRY_TRIGGER, REASON_TAG: NEVER_RAN, ATTEMPT_TAG: "0"},
            )
        )
    return requests, confirmed + advance


def latest_runs(instance: DagsterInstance, partitions: list[str]) -> dict[str, RunRecord]:
    """The newest run of each partition (one query for all of them)."""
    if not partitions:
        return {}
    # Every run of these partitions (a handful each: a first run, its retries, runs by hand).
    records = instance.get_run_records(filters=RunsFilter(tags={PARTITION_TAG: partitions}))
    latest: dict[str, RunRecord] = {}
    for record in records:
        key = record.dagster_run.tags[PARTITION_TAG]
        if key not in latest or record.storage_id > latest[key].storage_id:
            latest[key] = record
    return latest


def flag_for_a_person(
    entry: PartitionRetry, now: datetime, log: logging.Logger
) -> AssetObservation:
    """Out of tries: flag the partition and say so on the asset, for the UI."""
    entry.flagged, entry.flagged_at, entry.next_attempt_at = True, now.timestamp(), None
    log.warning(
        f"partition {entry.partition}: still unhealthy after {entry.tries} tries "
        f"({entry.reason}: {entry.detail}); flagged for a person, no more retries "
        "until someone re-materializes it"
    )
    return AssetObservation(
        asset_key=FLAGGED_ASSET,
        partition=entry.partition,
        metadata={
            "flagged_for_person": True,
            "retry_reason": entry.reason,
            "retry_detail": entry.detail,
            "tries": entry.tries,
            "last_failed_run": MetadataValue.text(entry.failed_run_id),
        },
    )


def retry_request(
    entry: PartitionRetry, settings: RetrySettings, log: logging.Logger
) -> RunRequest:
    """The next try of this partition; its run key is unique to the failed run it answers."""
    attempt = entry.tries + 1
    log.info(
        f"partition {entry.partition}: {entry.reason} ({entry.detail}) in run "
        f"{entry.failed_run_id}; requesting try {attempt} of {settings.max_tries}"
    )
    return RunRequest(
        partition_key=entry.partition,
        run_key=f"retry:{entry.partition}:{entry.failed_run_id}",
        run_config=requested_run_config(),
        tags={
            TRIGGER_TAG: RETRY_TRIGGER,
            ATTEMPT_TAG: str(attempt),
            REASON_TAG: entry.reason,
            RETRY_OF_TAG: entry.failed_run_id,
        },
    )


@dataclass
class _Tick:
    """What one evaluation found and decided."""

    entries: dict[str, PartitionRetry]
    requests: list[RunRequest] = field(default_factory=list)
    observations: list[AssetObservation] = field(default_factory=list)
    changed: bool = False  # the retry state must be written back


def failed_partitions_tick(
    context: SensorEvaluationContext,
    lake: Lake,
    settings: RetrySettings,
    *,
    now: datetime,
) -> SensorResult:
    """One evaluation of `failed_partitions` at time `now` (injectable for tests)."""
    instance = context.instance
    log = context.log
    state = _parse_cursor(context.cursor)
    # Runs whose process died stay STARTED: end them first, they are then retried below.
    for dead in recover_dead_runs(instance, now=now.timestamp()):
        log.warning(
            f"run {dead.run_id} of partition {dead.partition} died ({dead.reason}): marked failed"
        )
    tick = _Tick(entries=read_retries(instance))
    watch, updated_after = _partitions_to_watch(
        instance, tick.entries, settings, state.get("updated_after")
    )
    latest = latest_runs(instance, watch)
    for partition in watch:
        record = latest.get(partition)
        if record is None or record.dagster_run.status not in FINISHED_STATUSES:
            continue  # never ran, or a run is under way: wait for it
        entry = _entry_of_latest_run(instance, lake, partition, record, tick, log)
        if entry is not None and not entry.flagged:
            _plan_retry(entry, tick, settings, now, log)

    first_runs, confirmed = never_ran_requests(
        instance, lake, int(state.get("confirmed", 0)), settings, now=now, log=log
    )
    tick.requests.extend(first_runs[: max(settings.max_requests_per_tick - len(tick.requests), 0)])
    if tick.changed:
        write_retries(instance, tick.entries)
    cursor = orjson.dumps(
        {"v": CURSOR_VERSION, "updated_after": updated_after, "confirmed": confirmed}
    ).decode()
    return _tick_result(tick, cursor)


def _partitions_to_watch(
    instance: DagsterInstance,
    entries: dict[str, PartitionRetry],
    settings: RetrySettings,
    updated_after: float | None,
) -> tuple[list[str], float | None]:
    """The batch partitions whose runs finished since the cursor, and those being retried;
    the cursor's new `updated_after`."""
    finished = instance.get_run_records(
        filters=RunsFilter(
            statuses=FINISHED_STATUSES,
            updated_after=(
                datetime.fromtimestamp(updated_after, UTC) if updated_after is not None else None
            ),
        ),
        order_by="update_timestamp",
        ascending=True,
        limit=settings.max_runs_per_tick,
    )
    if finished:
        updated_after = max(r.update_timestamp.timestamp() for r in finished)
    touched = {
        r.dagster_run.tags[PARTITION_TAG] for r in finished if PARTITION_TAG in r.dagster_run.tags
    }
    watch = sorted(
        (touched & set(instance.get_dynamic_partitions(batch_partitions.name)))
        | {key for key, entry in entries.items() if not entry.flagged}
    )
    return watch, updated_after


def _entry_of_latest_run(
    instance: DagsterInstance,
    lake: Lake,
    partition: str,
    record: RunRecord,
    tick: _Tick,
    log: logging.Logger,
) -> PartitionRetry | None:
    """The partition's retry entry after its latest (finished) run: None when that run is
    healthy (an entry it had is cleared), a new entry when the run is new and unhealthy."""
    run = record.dagster_run
    entry = tick.entries.get(partition)
    if entry is not None and entry.failed_run_id == run.run_id:
        return entry
    verdict = assess_run(instance, lake, record)
    if verdict is None:
        if entry is not None:
            log.info(f"partition {partition}: run {run.run_id} is healthy; retries cleared")
            del tick.entries[partition]
            tick.changed = True
        return None
    tries = tries_of(record)
    if entry is not None and tries == 0 and entry.tries > 0:
        log.info(
            f"partition {partition}: run {run.run_id} was started by hand; "
            f"try count reset (was {entry.tries})"
        )
    entry = PartitionRetry(
        partition=partition,
        reason=verdict.reason,
        detail=verdict.detail,
        failed_run_id=run.run_id,
        failed_at=record.end_time or record.update_timestamp.timestamp(),
        tries=tries,
    )
    tick.entries[partition] = entry
    tick.changed = True
    return entry


def _plan_retry(
    entry: PartitionRetry,
    tick: _Tick,
    settings: RetrySettings,
    now: datetime,
    log: logging.Logger,
) -> None:
    """Flag the entry for a person when out of tries, else request its retry once due."""
    if entry.tries >= settings.max_tries:
        tick.observations.append(flag_for_a_person(entry, now, log))
        tick.changed = True
        return
    due = entry.failed_at + settings.backoff_seconds[entry.tries]
    if entry.reason == BUDGET_STOPPED:  # not before the budget window allows it
        window = next_window(datetime.fromtimestamp(entry.failed_at, UTC)).timestamp()
        due = max(due, window)
    if entry.next_attempt_at != due:
        entry.next_attempt_at, tick.changed = due, True
    if now.timestamp() < due or len(tick.requests) >= settings.max_requests_per_tick:
        return
    # The retry run itself counts the attempt in the status table (status.register_records).
    tick.requests.append(retry_request(entry, settings, log))


def _tick_result(tick: _Tick, cursor: str) -> SensorResult:
    if tick.requests:
        return SensorResult(
            run_requests=tick.requests, cursor=cursor, asset_events=tick.observations
        )
    waiting = [e for e in tick.entries.values() if not e.flagged]
    flagged = len(tick.entries) - len(waiting)
    reason = (
        f"{len(waiting)} partition(s) waiting for their backoff, {flagged} flagged for a person"
        if tick.entries
        else "every partition's latest run is healthy"
    )
    return SensorResult(skip_reason=reason, cursor=cursor, asset_events=tick.observations)


@sensor(
    name="failed_partitions",
    job_name=PIPELINE_JOB,
    minimum_interval_seconds=retry_interval_seconds(),
    default_status=default_sensor_status(),
    description=(
        "Re-requests batch partitions whose latest run failed, whose blocking gate failed or "
        "that kept rows with NULL AI fields: backoff 1 min, 5 min, 15 min, 1 h, 4 h; then "
        "flags them for a person."
    ),
)
def failed_partitions(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
    """Unhealthy partitions → retries with backoff → flagged for a person."""
    return failed_partitions_tick(
        context, lake.lake, RetrySettings.from_env(), now=datetime.now(UTC)
    )
