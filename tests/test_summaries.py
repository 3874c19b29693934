"""Daily conversation summaries on real normalized data, a real Dagster instance and DuckDB."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import psycopg
import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    ExecuteInProcessResult,
    RunRequest,
    build_sensor_context,
    materialize,
)

from enrichment_assets.cli.runner import land_files, materialize_partitions
from enrichment_assets.definitions import defs
from enrichment_assets.defs.checks import CONTRACT_CHECK, validate_layer
from enrichment_assets.defs.conversations.partitions import register_summary_days
from enrichment_assets.defs.resources import (
    AppDatabaseResource,
    LakeResource,
    LLMResource,
    PiiRedactionResource,
)
from enrichment_assets.defs.summaries.assets import (
    STALE_REASON_TAG,
    conversation_summaries,
    replace_summaries,
)
from enrichment_assets.defs.summaries.automation import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    SUMMARIES_JOB,
    stale_summaries,
    summary_days_of,
)
from enrichment_assets.enrichers.settings import LLMSettings
from enrichment_assets.lake import Lake
from enrichment_assets.packing import chunk_bounds
from enrichment_assets.summary_inputs import day_fingerprints, memo_path
from enrichment_assets.summary_windows import (
    default_windows,
    summaries_export_path,
    summaries_path,
    summary_id,
)
from tests.cli import enrich
from tests.factories import conversation, message, read_jsonl, write_jsonl

# The real PostgreSQL's fixtures: a migrated, seeded application database per test.
from tests.postgres import requires_postgres

DAY = "2024-06-01"
LINES = [
    "My laptop battery drains within an hour since the last update.",
    "Let us check which apps use the most power in the battery settings.",
    "The video editor is at the top of the list, even when it is closed.",
    "Disable its background refresh, then restart the laptop.",
    "That helped a lot, the battery lasts the whole afternoon now, thanks!",
    "Glad to hear it; tell me if the drain comes back after the next update.",
]


def chat(
    user_id: str, times: list[str], persona_id: str | None = "persona-anxious-student"
) -> dict:
    """One conversation of `user_id`, one message per timestamp, roles alternating."""
    messages = [message("system", "You are a helpful support assistant.")]
    messages += [
        message("user" if i % 2 == 0 else "assistant", LINES[i % len(LINES)], timestamp=timestamp)
        for i, timestamp in enumerate(times)
    ]
    return conversation(
        user_id=user_id, persona_id=persona_id, created_at=times[0], messages=messages
    )


def at(day: str, *clock: str) -> list[str]:
    return [f"{day}T{c}Z" for c in clock]


def land_and_run(lake: Lake, instance: DagsterInstance, path: Path, records: list[dict]) -> str:
    """Land one batch file and run it through normalized; returns its partition key."""
    (outcome,) = materialize_partitions(
        instance, land_files(lake, instance, [write_jsonl(path, records)])
    )
    assert outcome.success, outcome
    return outcome.partition


def summarize(
    instance: DagsterInstance,
    day: str = DAY,
    tags: dict[str, str] | None = None,
    app_db_url: str = "",
    **config: Any,
) -> ExecuteInProcessResult:
    register_summary_days(instance, [day])  # a day partition exists once it holds data
    result = materialize(
        [conversation_summaries],
        partition_key=day,
        instance=instance,
        resources={
            "lake": LakeResource(),
            "enricher": LLMResource(),
            "app_db": AppDatabaseResource(url=app_db_url),
            "pii": PiiRedactionResource(),
        },
        run_config={"ops": {"conversation_summaries": {"config": config}}} if config else None,
        tags=tags,
    )
    assert result.success
    return result


def summaries_of(lake: Lake, day: str = DAY) -> pl.DataFrame:
    return pl.read_parquet(summaries_path(lake, day)).sort("user_id", "window_start")


def tick(instance: DagsterInstance, cursor: str | None) -> tuple[list[RunRequest], str | None]:
    with build_sensor_context(
        instance=instance,
        cursor=cursor,
        # The enricher the runs below use: a day's fingerprint includes its settings.
        resources={"lake": LakeResource(), "enricher": LLMResource()},
    ) as context:
        result = stale_summaries(context)
    return list(result.run_requests or []), result.cursor


def summarized_batch(
    lake: Lake, instance: DagsterInstance, path: Path, user: str, hour: str
) -> tuple[str, str | None]:
    """A batch of five messages of `user` in that hour of DAY, summarized, and the sensor's
    cursor past it (it requests nothing: the summary saw the batch); (batch, cursor)."""
    clock = [f"{hour}:00:{s:02d}" for s in range(0, 50, 10)]
    batch = land_and_run(lake, instance, path, [chat(user, at(DAY, *clock))])
    summarize(instance)
    requests, cursor = tick(instance, None)
    assert requests == []
    return batch, cursor


def test_four_messages_in_the_window_get_no_summary_and_five_get_one(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    land_and_run(
        lake,
        instance,
        tmp_path / "day.jsonl",
        [
            chat("user-four", at(DAY, "09:00:00", "09:00:10", "09:00:20", "09:00:30")),
            chat("user-five", at(DAY, "10:00:00", "10:00:10", "10:00:20")),
            chat("user-five", at(DAY, "15:00:00", "15:00:10")),
        ],
    )

    result = summarize(instance)

    rows = summaries_of(lake)
    assert rows["user_id"].to_list() == ["user-five"]
    row = rows.row(0, named=True)
    assert row["message_count"] == 5 and row["conversation_count"] == 2
    assert row["window_start"].isoformat() == "2024-06-01T00:00:00+00:00"
    assert row["summary_id"] == summary_id("user-five", row["window_start"])
    assert row["summary"] and row["emotional_tone"] and row["enricher"] == "heuristic"
    assert 0 <= row["confidence"] <= 1
    assert row["compression_ratio"] == pytest.approx(
        len(row["summary"]) / row["source_chars"], abs=1e-4
    )
    (exported,) = read_jsonl(summaries_export_path(lake, DAY))
    assert exported["user_id"] == "user-five" and exported["window_start"] == "2024-06-01T00:00:00Z"
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks[CONTRACT_CHECK] is True


def test_one_summary_per_user_window_across_personas(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    land_and_run(
        lake,
        instance,
        tmp_path / "personas.jsonl",
        [
            chat("user-multi", at(DAY, "09:00:00", "09:00:10"), persona_id="persona-b"),
            chat("user-multi", at(DAY, "10:00:00", "10:00:10"), persona_id="persona-a"),
            chat("user-multi", at(DAY, "11:00:00", "11:00:10"), persona_id=None),
            # Four and three messages: neither persona alone would reach min_messages.
            chat("user-split", at(DAY, "12:00:00", "12:00:10", "12:00:20", "12:00:30"), "p-2"),
            chat("user-split", at(DAY, "13:00:00", "13:00:10", "13:00:20"), "p-1"),
            chat(
                "user-none",
                at(DAY, "14:00:00", "14:00:10", "14:00:20", "14:00:30", "14:00:40"),
                None,
            ),
        ],
    )

    summarize(instance)

    rows = {row["user_id"]: row for row in summaries_of(lake).iter_rows(named=True)}
    assert sorted(rows) == ["user-multi", "user-none", "user-split"]
    # A tie (two messages each) goes to the first persona_id in order.
    assert rows["user-multi"]["persona_id"] == "persona-a"
    assert rows["user-multi"]["persona_ids"] == ["persona-a", "persona-b"]
    assert rows["user-multi"]["message_count"] == 6
    # The most frequent persona wins over the order of ids.
    assert rows["user-split"]["persona_id"] == "p-2"
    assert rows["user-split"]["message_count"] == 7
    assert rows["user-split"]["persona_ids"] == ["p-1", "p-2"]
    assert rows["user-none"]["persona_id"] is None and rows["user-none"]["persona_ids"] == []
    for user, row in rows.items():
        assert row["summary_id"] == summary_id(user, row["window_start"])
    exported = {line["user_id"]: line for line in read_jsonl(summaries_export_path(lake, DAY))}
    assert exported["user-split"]["persona_ids"] == ["p-1", "p-2"]


def test_messages_at_235959_and_000000_fall_in_their_own_windows(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    # One conversation across midnight: five messages on each side.
    before = at(DAY, "23:59:00", "23:59:10", "23:59:20", "23:59:30", "23:59:59")
    after = at("2024-06-02", "00:00:00", "00:00:10", "00:00:20", "00:00:30", "00:00:40")
    land_and_run(lake, instance, tmp_path / "midnight.jsonl", [chat("user-night", before + after)])

    summarize(instance, DAY)
    summarize(instance, "2024-06-02")

    (first,) = summaries_of(lake, DAY).iter_rows(named=True)
    (second,) = summaries_of(lake, "2024-06-02").iter_rows(named=True)
    assert first["message_count"] == 5 == second["message_count"]
    assert first["last_message_at"].isoformat() == "2024-06-01T23:59:59+00:00"
    assert second["first_message_at"].isoformat() == "2024-06-02T00:00:00+00:00"
    assert second["window_start"].isoformat() == "2024-06-02T00:00:00+00:00"

    # Six-hour windows tile the day: 23:59:59 is in the last one, [18:00, 24:00).
    summarize(instance, DAY, window_hours=6)
    (last,) = summaries_of(lake, DAY).iter_rows(named=True)
    assert last["window_start"].isoformat() == "2024-06-01T18:00:00+00:00"
    assert last["window_end"].isoformat() == "2024-06-02T00:00:00+00:00"


def test_rerunning_a_day_replaces_its_rows(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    land_and_run(
        lake,
        instance,
        tmp_path / "day.jsonl",
        [
            chat(f"user-{n}", at(DAY, "08:00:00", "08:01:00", "08:02:00", "08:03:00", "08:04:00"))
            for n in range(3)
        ],
    )

    summarize(instance)
    first = summaries_of(lake)
    summarize(instance)
    second = summaries_of(lake)

    assert first.height == second.height == 3
    assert second["summary_id"].to_list() == first["summary_id"].to_list()
    assert len(read_jsonl(summaries_export_path(lake, DAY))) == 3
    # A stricter threshold on the same day leaves none of the earlier rows behind.
    summarize(instance, min_messages=6)
    assert summaries_of(lake).height == 0
    assert not summaries_export_path(lake, DAY).exists()  # no line, no file


def test_late_batch_marks_its_day_stale_and_the_rerun_updates_it(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    _, cursor = summarized_batch(lake, instance, tmp_path / "on-time.jsonl", "user-late", "09")

    late = land_and_run(
        lake,
        instance,
        tmp_path / "late.jsonl",
        [
            chat("user-late", at(DAY, "20:00:00", "20:00:10")),
            chat("user-new", at(DAY, "21:00:00", "21:00:10", "21:00:20", "21:00:30", "21:00:40")),
            # A day never summarized is left to the schedule / backfills.
            chat("user-new", at("2024-06-05", "10:00:00", "10:00:10")),
        ],
    )
    requests, cursor = tick(instance, cursor)

    (request,) = requests
    assert request.partition_key == DAY
    reason = request.tags[STALE_REASON_TAG]
    assert late in reason and "late data" in reason

    job = defs.resolve_job_def(SUMMARIES_JOB)
    run = job.execute_in_process(partition_key=DAY, instance=instance, tags=request.tags)
    assert run.success
    rows = summaries_of(lake)
    assert dict(zip(rows["user_id"], rows["message_count"], strict=True)) == {
        "user-late": 7,
        "user-new": 5,
    }
    materialization = instance.get_latest_materialization_event(AssetKey("conversation_summaries"))
    assert materialization is not None and materialization.asset_materialization is not None
    assert late in materialization.asset_materialization.metadata["rerun_reason"].value
    assert tick(instance, cursor)[0] == []  # up to date again


def test_uniqueness_gate_catches_an_injected_duplicate(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    land_and_run(
        lake,
        instance,
        tmp_path / "day.jsonl",
        [chat("user-dup", at(DAY, "11:00:00", "11:00:10", "11:00:20", "11:00:30", "11:00:40"))],
    )
    summarize(instance)
    path = summaries_path(lake, DAY)
    assert validate_layer(lake, "conversation_summaries", path, DAY).blocked_reason is None

    rows = pl.read_parquet(path)
    # Same user and window under another id and persona: only the compound key can tell.
    injected = rows.with_columns(
        pl.lit("00000000-0000-4000-8000-000000000000").alias("summary_id"),
        pl.lit("persona-other").alias("persona_id"),
    )
    pl.concat([rows, injected]).write_parquet(path)
    report = validate_layer(lake, "conversation_summaries", path, DAY)

    assert report.blocked_reason is not None
    assert "expect_compound_columns_to_be_unique" in report.blocked_reason
    contract = next(c for c in report.check_results if c.check_name == CONTRACT_CHECK)
    assert contract.passed is False


def test_failed_gate_keeps_the_days_previous_summaries_and_export(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    land_and_run(
        lake,
        instance,
        tmp_path / "day.jsonl",
        [chat("user-kept", at(DAY, "11:00:00", "11:00:10", "11:00:20", "11:00:30", "11:00:40"))],
    )
    summarize(instance)
    path, export = summaries_path(lake, DAY), summaries_export_path(lake, DAY)
    previous_rows, previous_export = path.read_bytes(), export.read_bytes()

    rows = pl.read_parquet(path)
    duplicated = pl.concat(
        [
            rows,
            rows.with_columns(pl.lit("00000000-0000-4000-8000-000000000000").alias("summary_id")),
        ]
    )
    report = replace_summaries(lake, DAY, duplicated)

    assert report.blocked_reason is not None
    assert "expect_compound_columns_to_be_unique" in report.blocked_reason
    assert path.read_bytes() == previous_rows
    assert export.read_bytes() == previous_export
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left

    # The same rows without the duplicate pass and replace the file.
    passed = replace_summaries(lake, DAY, rows.with_columns(pl.lit("again").alias("summary")))
    assert passed.blocked_reason is None
    assert pl.read_parquet(path)["summary"].to_list() == ["again"]


@requires_postgres
def test_summaries_publish_one_row_per_user_window_and_a_rerun_keeps_the_count(
    lake: Lake,
    instance: DagsterInstance,
    tmp_path: Path,
    app_db: str,
) -> None:
    land_and_run(
        lake,
        instance,
        tmp_path / "day.jsonl",
        [
            chat("user-a", at(DAY, "08:00:00", "08:00:10", "08:00:20"), "persona-b"),
            chat("user-a", at(DAY, "09:00:00", "09:00:10"), "persona-a"),
            chat("user-b", at(DAY, "10:00:00", "10:00:10", "10:00:20", "10:00:30", "10:00:40")),
        ],
    )

    def published() -> list[tuple]:
        with psycopg.connect(app_db) as conn:
            return conn.execute(
                "SELECT user_id, window_start, persona_id, message_count, summary_id "
                "FROM conversation_summaries WHERE day = %s ORDER BY user_id, window_start",
                [DAY],
            ).fetchall()

    summarize(instance, app_db_url=app_db)
    first = published()
    summarize(instance, app_db_url=app_db)

    assert published() == first
    assert [(user, persona, count) for user, _, persona, count, _ in first] == [
        ("user-a", "persona-b", 5),
        ("user-b", "persona-anxious-student", 5),
    ]
    assert [row[4] for row in first] == summaries_of(lake)["summary_id"].to_list()
    # A stricter threshold re-run removes the day's rows that no longer qualify.
    summarize(instance, app_db_url=app_db, min_messages=6)
    assert published() == []


def test_enrich_run_summarizes_the_days_its_batches_cover(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    today = datetime.now(UTC).date().isoformat()
    path = write_jsonl(
        tmp_path / "in" / "days.jsonl",
        [
            chat("user-run", at(DAY, "09:00:00", "09:00:10", "09:00:20", "09:00:30", "09:00:40")),
            chat("user-run", at("2024-06-02", "09:00:00", "09:00:10")),  # too few: an empty day
            chat("user-run", at(today, "00:00:01", "00:00:02", "00:00:03", "00:00:04", "00:00:05")),
        ],
    )

    result = enrich(capsys, "run", str(path))

    assert result.code == 0, result.stderr
    assert "summaries: 1 over 2 day(s) 2024-06-01..2024-06-02" in result.stdout
    (line,) = read_jsonl(summaries_export_path(lake, DAY))
    assert line["user_id"] == "user-run" and line["message_count"] == 5
    assert not summaries_export_path(lake, "2024-06-02").exists()  # no line, no file
    # Today is not a summary day until it is over.
    assert not summaries_export_path(lake, today).exists()
    batches = instance.get_dynamic_partitions("batches")
    assert summary_days_of(lake, batches) == [DAY, "2024-06-02"]
    # Both days in ONE run over their range (one scan of the normalized layer), each with
    # its own materialization and its own gate results.
    (run,) = [r for r in instance.get_runs() if r.job_name == SUMMARIES_JOB]
    assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == (DAY, "2024-06-02")
    materialized = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    assert sorted(r.event_log_entry.dagster_event.partition for r in materialized) == [
        DAY,
        "2024-06-02",
    ]
    checked = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    by_day: dict[str, set[str]] = {}
    for record in checked:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        assert evaluation.passed, evaluation
        by_day.setdefault(evaluation.partition, set()).add(evaluation.check_name)
    assert set(by_day) == {DAY, "2024-06-02"} and by_day[DAY] == by_day["2024-06-02"]
    assert CONTRACT_CHECK in by_day[DAY]


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def test_a_day_whose_inputs_did_not_change_is_not_recomputed_nor_rewritten(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    summarized_batch(lake, instance, tmp_path / "day.jsonl", "user-same", "07")
    files = [summaries_path(lake, DAY), summaries_export_path(lake, DAY)]
    before = [_identity(f) for f in files]

    again = summarize(instance)  # as a re-materialization from the UI

    (event,) = again.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert "inputs unchanged" in metadata["skipped"].value
    assert metadata["dagster/row_count"].value == 1  # the last build's figures
    assert all(e.passed for e in again.get_asset_check_evaluations())
    assert [_identity(f) for f in files] == before
    # Other window settings are other inputs: the day is computed and its files replaced.
    summarize(instance, min_messages=4)
    assert [_identity(f) for f in files] != before


def test_stale_summaries_skips_days_whose_inputs_did_not_change_and_defers_a_running_day(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    batch, cursor = summarized_batch(lake, instance, tmp_path / "day.jsonl", "user-re", "10")
    # The batch materialized again with the same output: its day's inputs are the same.
    (again,) = materialize_partitions(instance, [batch])
    assert again.success
    requests, cursor = tick(instance, cursor)
    assert requests == []

    # Late data on the day while a run of that day is still going: not a second run at once.
    going = instance.create_run_for_job(
        defs.resolve_job_def(SUMMARIES_JOB),
        tags={"dagster/partition": DAY},
        status=DagsterRunStatus.STARTED,
    )
    late = [chat("user-re", at(DAY, "22:00:00", "22:00:10"))]
    land_and_run(lake, instance, tmp_path / "late.jsonl", late)
    requests, held = tick(instance, cursor)
    assert requests == []
    instance.report_run_failed(going)
    # Nor while a run over a range of days that holds this one is going (a backfill's
    # single run, `enrich run`).
    register_summary_days(instance, ["2024-06-05"])
    going = instance.create_run_for_job(
        defs.resolve_job_def(SUMMARIES_JOB),
        tags={RANGE_START_TAG: DAY, RANGE_END_TAG: "2024-06-05"},
        status=DagsterRunStatus.STARTED,
    )
    requests, held = tick(instance, held)
    assert requests == []
    # Once that run is over, the late batch (behind the held cursor) makes the day run.
    instance.report_run_failed(going)
    (request,) = tick(instance, held)[0]
    assert request.partition_key == DAY
    # The same inputs are requested under the same run key: never twice.
    assert tick(instance, held)[0][0].run_key == request.run_key


def test_summary_windows_go_to_the_enricher_in_chunks_bounded_by_their_messages() -> None:
    # A day has few windows but each holds all its user's messages: at 1,000,000
    # conversations one call over a day's windows took 4.7 GB (2.1 GB in chunks).
    assert list(chunk_bounds([], 20_000, 250_000)) == [(0, 0)]  # no window: one empty call
    assert list(chunk_bounds([100_000] * 5, 20_000, 250_000)) == [(0, 2), (2, 4), (4, 5)]
    assert list(chunk_bounds([300_000, 1, 1], 20_000, 250_000)) == [(0, 1), (1, 3)]
    assert list(chunk_bounds([1] * 5, 2, 250_000)) == [(0, 2), (2, 4), (4, 5)]


def test_the_answers_of_a_scan_are_reused_until_a_file_of_the_layer_is_rewritten(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    """`enrich run` on unchanged input asks which days its batches touch and whether their
    inputs changed: from the memo while no normalized or status file was rewritten, by a
    scan again once one was (its answer planted in the memo is then ignored)."""
    batch = land_and_run(
        lake, instance, tmp_path / "day.jsonl", [chat("user-memo", at(DAY, "08:00:00", "08:00:10"))]
    )
    settings, windows = LLMSettings.from_env(), default_windows()
    days = summary_days_of(lake, [batch])
    prints = day_fingerprints(lake, [DAY], windows, settings)
    assert days == [DAY] and set(prints) == {DAY}

    memo = orjson.loads(memo_path(lake).read_bytes())
    memo["batches"][batch]["days"] = ["2024-01-01"]
    memo["days"][DAY] = "planted"
    memo_path(lake).write_bytes(orjson.dumps(memo))
    assert summary_days_of(lake, [batch]) == ["2024-01-01"]  # read back: no scan
    assert day_fingerprints(lake, [DAY], windows, settings) == {DAY: "planted"}

    status = lake.layer_path("status", batch)
    copy = status.with_name(".copy")
    shutil.copyfile(status, copy)
    os.replace(copy, status)  # the same rows, a new file: the memo no longer holds
    assert summary_days_of(lake, [batch]) == days
    assert day_fingerprints(lake, [DAY], windows, settings) == prints
