"""The sensors on a real Dagster instance, real files and real (in-process) runs.

Ticks are evaluated with `build_sensor_context`; what the daemon would do with a
tick's result (add the partitions, launch the runs) the tests do themselves with
the same instance and job. Time is injected (`now`), never slept.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetObservation,
    DagsterInstance,
    MaterializeResult,
    SensorEvaluationContext,
    SensorResult,
    asset,
    build_sensor_context,
    materialize,
)

from enrichment_assets.cli.runner import PartitionOutcome, land_files, materialize_partitions
from enrichment_assets.definitions import defs
from enrichment_assets.defs.automation import failed_partitions, new_raw_files
from enrichment_assets.defs.automation.failed_partitions import failed_partitions_tick
from enrichment_assets.defs.automation.landing import LandingCursor
from enrichment_assets.defs.automation.new_raw_files import new_raw_files_tick, plan_new_files
from enrichment_assets.defs.automation.retry_state import flagged_partitions, read_retries
from enrichment_assets.defs.automation.settings import NewFilesSettings, RetrySettings
from enrichment_assets.defs.conversations.partitions import batch_partitions
from enrichment_assets.defs.resources import LakeResource
from enrichment_assets.lake import Lake
from enrichment_assets.partition_retry import GATE_FAILED, NULL_AI_FIELDS, RUN_FAILED
from enrichment_assets.status import read_status
from tests.cli import enrich
from tests.factories import conversation, write_jsonl

SETTLED = 120  # seconds: well past the default settle time


# --- helpers ------------------------------------------------------------------------


def drop_file(lake: Lake, name: str, records: int = 1, *, age: float = SETTLED) -> Path:
    """A JSONL file of `records` conversations in the landing folder, last written `age`s ago."""
    path = write_jsonl(lake.landing_dir / name, [conversation() for _ in range(records)])
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def sensor_context(instance: DagsterInstance, cursor: str | None = None) -> SensorEvaluationContext:
    """The context the daemon gives a tick: this instance, the code location's resources
    (open it with `with`, as the daemon does: the lake resource has a lifecycle)."""
    return build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources={"lake": LakeResource()}
    )


def new_files_tick(
    instance: DagsterInstance,
    lake: Lake,
    cursor: str | None = None,
    settings: NewFilesSettings | None = None,
) -> SensorResult:
    context = sensor_context(instance, cursor)
    return new_raw_files_tick(context, lake, settings or NewFilesSettings(), now=time.time())


def apply_partitions(instance: DagsterInstance, result: SensorResult) -> None:
    """What the daemon does with a tick's dynamic partition requests."""
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)


def requested_keys(result: SensorResult) -> list[str]:
    return [request.partition_key for request in result.run_requests or []]


def retry_tick(
    instance: DagsterInstance, lake: Lake, now: datetime, cursor: str | None = None
) -> SensorResult:
    context = sensor_context(instance, cursor)
    return failed_partitions_tick(context, lake, RetrySettings(), now=now)


def run_once(
    instance: DagsterInstance, partition: str, tags: dict[str, str] | None = None
) -> PartitionOutcome:
    """Launch the pipeline for one partition, as the daemon would for a run request."""
    (outcome,) = materialize_partitions(instance, [partition], tags=tags)
    return outcome


def ended_at(instance: DagsterInstance, run_id: str) -> datetime:
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.end_time is not None
    return datetime.fromtimestamp(record.end_time, UTC)


def failing_partition(instance: DagsterInstance, key: str = "ghost-000000000000") -> str:
    """A partition the instance knows but whose batch was never frozen: its runs fail."""
    instance.add_dynamic_partitions(batch_partitions.name, [key])
    return key


# --- new_raw_files --------------------------------------------------------------------


def test_one_new_file_registers_one_partition_and_requests_one_run(
    lake: Lake, instance: DagsterInstance
) -> None:
    drop_file(lake, "chat-2024-06-01.jsonl", records=3)

    with sensor_context(instance) as context:
        result = new_raw_files(context)

    assert isinstance(result, SensorResult)
    (request,) = result.run_requests
    (added,) = result.dynamic_partitions_requests
    assert added.partitions_def_name == "batches"
    assert added.partition_keys == [request.partition_key]
    assert "," not in request.partition_key
    assert request.tags["enrich/trigger"] == "new_raw_files"
    assert request.tags["enrich/files"] == "chat-2024-06-01.jsonl"
    assert request.tags["enrich/file_count"] == "1"
    manifest = lake.load_manifest(request.partition_key)
    assert [Path(e.source_path).name for e in manifest.files] == ["chat-2024-06-01.jsonl"]


def test_a_second_tick_requests_nothing_again(lake: Lake, instance: DagsterInstance) -> None:
    drop_file(lake, "one.jsonl")
    first = new_files_tick(instance, lake)
    apply_partitions(instance, first)

    second = new_files_tick(instance, lake, cursor=first.cursor)

    assert second.run_requests == [] and not second.dynamic_partitions_requests
    assert second.skip_reason is not None
    assert instance.get_dynamic_partitions("batches") == requested_keys(first)


def test_a_reset_cursor_does_not_register_the_same_content_twice(
    lake: Lake, instance: DagsterInstance
) -> None:
    drop_file(lake, "one.jsonl")
    first = new_files_tick(instance, lake)
    apply_partitions(instance, first)

    after_reset = new_files_tick(instance, lake, cursor=None)

    assert after_reset.run_requests == []
    assert lake.registered_batches() == requested_keys(first)


def test_the_same_content_under_another_name_is_not_registered_again(
    lake: Lake, instance: DagsterInstance
) -> None:
    original = drop_file(lake, "one.jsonl")
    first = new_files_tick(instance, lake)
    apply_partitions(instance, first)
    copy = lake.landing_dir / "copy-of-one.jsonl"
    copy.write_bytes(original.read_bytes())
    os.utime(copy, (time.time() - SETTLED,) * 2)

    second = new_files_tick(instance, lake, cursor=first.cursor)

    assert second.run_requests == []
    assert len(lake.registered_batches()) == 1


def test_a_fresh_half_written_file_is_left_for_a_later_tick(
    lake: Lake, instance: DagsterInstance
) -> None:
    fresh = drop_file(lake, "still-writing.jsonl", age=0)
    drop_file(lake, "upload.jsonl.part")
    drop_file(lake, "export.tmp")
    drop_file(lake, ".hidden.jsonl")
    drop_file(lake, ".staging/inside-a-dot-folder.jsonl")

    first = new_files_tick(instance, lake)

    assert first.run_requests == [] and not first.dynamic_partitions_requests
    assert "still being written" in first.skip_reason.skip_message
    assert lake.registered_batches() == []

    os.utime(fresh, (time.time() - SETTLED,) * 2)  # the writer is done
    second = new_files_tick(instance, lake, cursor=first.cursor)
    (request,) = second.run_requests
    assert request.tags["enrich/files"] == "still-writing.jsonl"


def test_150_small_files_become_batches_within_the_file_and_byte_limits(
    lake: Lake, instance: DagsterInstance
) -> None:
    names = [f"small-{i:03d}.jsonl" for i in range(150)]
    sizes = {name: drop_file(lake, name).stat().st_size for name in names}
    limits = NewFilesSettings(max_files_per_batch=50, max_bytes_per_batch=30 * max(sizes.values()))

    result = new_files_tick(instance, lake, settings=limits)

    keys = requested_keys(result)
    assert len(keys) == len(set(keys)) == 5  # 30 files per batch: the byte limit binds first
    assert result.dynamic_partitions_requests[0].partition_keys == keys
    batched: list[str] = []
    for key in keys:
        files = lake.load_manifest(key).files
        assert len(files) <= limits.max_files_per_batch
        assert sum(entry.size for entry in files) <= limits.max_bytes_per_batch
        batched.extend(Path(entry.source_path).name for entry in files)
    assert sorted(batched) == names  # every file in exactly one batch


def test_a_tick_registers_at_most_its_batch_limit_and_leaves_the_rest_for_the_next(
    lake: Lake, instance: DagsterInstance
) -> None:
    for i in range(150):
        drop_file(lake, f"small-{i:03d}.jsonl")
    limits = NewFilesSettings(max_files_per_batch=50, max_batches_per_tick=2)

    first = new_files_tick(instance, lake, settings=limits)
    apply_partitions(instance, first)
    second = new_files_tick(instance, lake, cursor=first.cursor, settings=limits)
    apply_partitions(instance, second)
    third = new_files_tick(instance, lake, cursor=second.cursor, settings=limits)

    assert [len(r.run_requests) for r in (first, second, third)] == [2, 1, 0]
    files = [
        len(lake.load_manifest(k).files) for k in requested_keys(first) + requested_keys(second)
    ]
    assert files == [50, 50, 50]


def test_a_file_changed_after_registration_is_a_new_batch_with_a_warning(
    lake: Lake, instance: DagsterInstance
) -> None:
    path = drop_file(lake, "daily.jsonl")
    first = new_files_tick(instance, lake)
    apply_partitions(instance, first)
    write_jsonl(path, [conversation(), conversation()])
    os.utime(path, (time.time() - SETTLED,) * 2)

    cursor = LandingCursor.parse(first.cursor)
    known = set(instance.get_dynamic_partitions("batches"))
    plan = plan_new_files(
        lake, lake.landing_dir, known, cursor, NewFilesSettings(), now=time.time()
    )

    (manifest,) = plan.manifests
    assert manifest.batch not in requested_keys(first)
    (warning,) = plan.warnings
    assert "daily.jsonl changed after it was registered as batch" in warning
    assert requested_keys(first)[0] in warning


def test_a_batch_frozen_by_a_tick_that_died_is_requested_again(
    lake: Lake, instance: DagsterInstance
) -> None:
    drop_file(lake, "one.jsonl")
    lost = new_files_tick(instance, lake)  # its result never reached the daemon

    again = new_files_tick(instance, lake, cursor=None)

    assert requested_keys(again) == requested_keys(lost)
    assert again.dynamic_partitions_requests[0].partition_keys == requested_keys(lost)


def test_the_requested_run_turns_the_file_into_exports(
    lake: Lake, instance: DagsterInstance
) -> None:
    drop_file(lake, "one.jsonl", records=2)
    result = new_files_tick(instance, lake)
    apply_partitions(instance, result)
    (request,) = result.run_requests

    outcome = run_once(instance, request.partition_key, tags=request.tags)

    assert outcome.success
    assert lake.export_path("training", request.partition_key).read_text().count("\n") == 2
    run = instance.get_run_by_id(outcome.run_id)
    assert run is not None and run.tags["enrich/files"] == "one.jsonl"


# --- failed_partitions ----------------------------------------------------------------


def test_a_failed_partition_is_requested_again_after_one_minute_and_not_before(
    lake: Lake, instance: DagsterInstance
) -> None:
    partition = failing_partition(instance)
    failed = run_once(instance, partition)
    assert not failed.success
    end = ended_at(instance, failed.run_id)

    early = retry_tick(instance, lake, now=end + timedelta(seconds=59))
    assert early.run_requests == []
    entry = read_retries(instance)[partition]
    assert (entry.reason, entry.tries, entry.failed_run_id) == (RUN_FAILED, 0, failed.run_id)
    assert "manifest" in entry.detail

    due = retry_tick(instance, lake, now=end + timedelta(seconds=60), cursor=early.cursor)
    (request,) = due.run_requests
    assert request.partition_key == partition
    assert request.tags["enrich/trigger"] == "failed_partitions"
    assert request.tags["enrich/retry_attempt"] == "1"
    assert request.tags["enrich/retry_reason"] == RUN_FAILED
    assert request.tags["enrich/retry_of"] == failed.run_id
    assert request.run_key == f"retry:{partition}:{failed.run_id}"


def test_after_five_failed_tries_the_partition_is_flagged_and_not_requested_a_sixth_time(
    lake: Lake, instance: DagsterInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    partition = failing_partition(instance)
    latest = run_once(instance, partition)
    cursor = None
    waits = [60, 300, 900, 3600, 14400]
    run_keys = set()
    for attempt, wait in enumerate(waits, start=1):
        end = ended_at(instance, latest.run_id)
        before = retry_tick(instance, lake, end + timedelta(seconds=wait - 1), cursor)
        assert before.run_requests == [], f"try {attempt} requested before its backoff"
        due = retry_tick(instance, lake, end + timedelta(seconds=wait), before.cursor)
        (request,) = due.run_requests
        assert request.tags["enrich/retry_attempt"] == str(attempt)
        run_keys.add(request.run_key)
        latest = run_once(instance, partition, tags=request.tags)  # fails again
        assert not latest.success
        cursor = due.cursor
    assert len(run_keys) == 5  # one run key per try: none is blocked by an earlier one

    much_later = ended_at(instance, latest.run_id) + timedelta(days=30)
    flagging = retry_tick(instance, lake, much_later, cursor)
    assert flagging.run_requests == []
    (flagged,) = flagged_partitions(instance)
    assert (flagged.partition, flagged.tries, flagged.failed_run_id) == (
        partition,
        5,
        latest.run_id,
    )
    (observation,) = flagging.asset_events
    assert isinstance(observation, AssetObservation)
    assert observation.partition == partition
    assert observation.metadata["flagged_for_person"].value is True

    later_still = retry_tick(instance, lake, much_later + timedelta(days=1), flagging.cursor)
    assert later_still.run_requests == [] and later_still.asset_events == []
    # The retry state is the instance's: `enrich report` (its own instance object, the same
    # DAGSTER_HOME) lists the flagged partition, and the data folder holds no state file.
    report = enrich(capsys, "report", "--json")
    assert report.code == 0, report.stderr
    assert [f["partition"] for f in report.json()["metrics"]["flagged_partitions"]] == [partition]
    assert not list((lake.data_dir / "lake").glob("*retries*"))


def test_a_rematerialization_by_a_person_resets_the_count(
    lake: Lake, instance: DagsterInstance
) -> None:
    partition = failing_partition(instance)
    run_once(instance, partition)
    cursor = None
    for attempt in range(1, 6):
        due = retry_tick(instance, lake, datetime.now(UTC) + timedelta(days=1), cursor)
        (request,) = due.run_requests
        assert request.tags["enrich/retry_attempt"] == str(attempt)
        run_once(instance, partition, tags=request.tags)
        cursor = due.cursor
    cursor = retry_tick(instance, lake, datetime.now(UTC) + timedelta(days=2), cursor).cursor
    assert [f.partition for f in flagged_partitions(instance)] == [partition]

    by_hand = run_once(instance, partition)  # a person re-materializes it; it fails again
    end = ended_at(instance, by_hand.run_id)
    early = retry_tick(instance, lake, end + timedelta(seconds=30), cursor)
    assert early.run_requests == []
    assert flagged_partitions(instance) == []
    assert read_retries(instance)[partition].tries == 0
    (request,) = retry_tick(instance, lake, end + timedelta(seconds=60), early.cursor).run_requests
    assert request.tags["enrich/retry_attempt"] == "1"


def test_a_partition_that_recovers_leaves_the_retry_state(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    (partition,) = land_files(
        lake, instance, [write_jsonl(tmp_path / "in.jsonl", [conversation()])]
    )
    frozen = lake.batch_dir(partition)
    frozen.rename(tmp_path / "moved-away")  # the landing store is unreachable for a while
    failed = run_once(instance, partition)
    assert not failed.success
    end = ended_at(instance, failed.run_id)
    due = retry_tick(instance, lake, end + timedelta(minutes=1))
    (request,) = due.run_requests
    assert "has no manifest" in read_retries(instance)[partition].detail

    (tmp_path / "moved-away").rename(frozen)  # back again
    assert run_once(instance, partition, tags=request.tags).success
    after = retry_tick(instance, lake, end + timedelta(hours=5), due.cursor)

    assert after.run_requests == []
    assert read_retries(instance) == {}


def test_rows_with_null_ai_fields_and_an_error_are_re_requested(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [conversation(), conversation()])
    (partition,) = land_files(lake, instance, [source])
    outcome = run_once(instance, partition)
    assert outcome.success
    # What a failed annotation leaves behind (the Enricher contract): AI fields NULL, error set.
    enriched_path = lake.layer_path("enriched", partition)
    enriched = pl.read_parquet(enriched_path)
    failed_row = pl.col("record_index") == 0
    enriched.with_columns(
        pl.when(failed_row)
        .then(
            pl.col("enrichment").struct.with_fields(
                pl.lit(None, pl.String).alias("summary"),
                pl.lit("llm endpoint timed out").alias("error"),
            )
        )
        .otherwise(pl.col("enrichment"))
        .alias("enrichment")
    ).write_parquet(enriched_path)
    end = ended_at(instance, outcome.run_id)

    result = retry_tick(instance, lake, end + timedelta(minutes=1))

    (request,) = result.run_requests
    assert request.tags["enrich/retry_reason"] == NULL_AI_FIELDS
    entry = read_retries(instance)[partition]
    assert entry.detail == "1 enriched row(s) with NULL AI fields and an error"
    statuses = read_status(lake, partition).sort("record_index")
    assert statuses["retry_count"].to_list() == [0, 0]  # normalized rows: completed, no error


def test_a_failed_blocking_gate_is_re_requested(lake: Lake, instance: DagsterInstance) -> None:
    partition = failing_partition(instance, "gated-000000000000")

    @asset(
        name="gated_conversations",
        partitions_def=batch_partitions,
        check_specs=[AssetCheckSpec("rows_conserved", asset="gated_conversations", blocking=True)],
    )
    def gated_conversations() -> MaterializeResult:
        return MaterializeResult(
            check_results=[
                AssetCheckResult(
                    check_name="rows_conserved",
                    passed=False,
                    severity=AssetCheckSeverity.ERROR,
                    metadata={"raw": 3, "validated": 2},
                )
            ]
        )

    result = materialize(
        [gated_conversations], instance=instance, partition_key=partition, raise_on_error=False
    )
    end = ended_at(instance, result.run_id)

    due = retry_tick(instance, lake, end + timedelta(minutes=1))

    (request,) = due.run_requests
    assert request.tags["enrich/retry_reason"] == GATE_FAILED
    entry = read_retries(instance)[partition]
    assert entry.reason == GATE_FAILED
    assert "gated_conversations:rows_conserved" in entry.detail


def test_healthy_runs_leave_nothing_to_retry(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    (partition,) = land_files(
        lake, instance, [write_jsonl(tmp_path / "in.jsonl", [conversation()])]
    )
    assert run_once(instance, partition).success

    with sensor_context(instance) as context:
        result = failed_partitions(context)

    assert result.run_requests == []
    assert result.skip_reason.skip_message == "every partition's latest run is healthy"
    assert read_retries(instance) == {}
