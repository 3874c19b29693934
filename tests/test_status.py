"""Per-conversation statuses, rewritten by DuckDB on real Parquet files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from enrichment_assets.lake import Lake
from enrichment_assets.status import (
    CHANGE_SCHEMA,
    apply_changes,
    apply_staged_changes,
    change_rows,
    read_status,
    register_records,
)

T0 = datetime(2024, 6, 1, tzinfo=UTC)
T1 = datetime(2024, 6, 2, tzinfo=UTC)
T2 = datetime(2024, 6, 3, tzinfo=UTC)


def _records(count: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"record_index": range(count), "conversation_id": [f"id-{i}" for i in range(count)]}
    )


def _validation(count: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "record_index": range(count),
            "status": ["validated" if i % 3 else "validation_failed" for i in range(count)],
            "last_error": [None if i % 3 else "invalid_json" for i in range(count)],
            "last_attempt": [T1] * count,
        }
    )


def test_staged_changes_give_the_statuses_of_the_same_changes_in_memory(tmp_path: Path) -> None:
    in_memory, staged = Lake(tmp_path / "a"), Lake(tmp_path / "b")
    for lake in (in_memory, staged):
        register_records(lake, "p", _records(1000), T0)
    changes = _validation(1000)
    apply_changes(in_memory, "p", changes, T1)
    path = tmp_path / "changes.parquet"
    with pq.ParquetWriter(path, CHANGE_SCHEMA) as out:
        for chunk in changes.iter_slices(128):  # as a layer writes them, chunk by chunk
            out.write_table(change_rows(chunk).to_arrow().cast(CHANGE_SCHEMA))
    apply_staged_changes(staged, "p", path, ("status", "last_error", "last_attempt"), T1)

    expected = read_status(in_memory, "p")
    assert read_status(staged, "p").equals(expected)
    assert expected["record_index"].to_list() == list(range(1000))  # record order kept
    assert expected.filter(pl.col("status") == "validation_failed").height == 334
    assert expected["updated_at"].unique().to_list() == [T1]


def test_a_change_keeps_what_it_does_not_set_and_counts_attempts(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    register_records(lake, "p", _records(3), T0)
    apply_changes(lake, "p", _validation(3), T1)  # 0 failed, 1 and 2 validated
    apply_changes(
        lake,
        "p",
        pl.DataFrame({"record_index": [1, 2], "status": ["enrichment_in_progress"] * 2}),
        T2,
    )
    apply_changes(lake, "p", pl.DataFrame({"record_index": [1], "status": ["completed"]}), T2)
    apply_changes(
        lake,
        "p",
        pl.DataFrame({"record_index": [1], "status": ["enrichment_in_progress"]}),
        T2,
    )
    rows = {r["record_index"]: r for r in read_status(lake, "p").iter_rows(named=True)}
    assert rows[0]["status"] == "validation_failed" and rows[0]["last_error"] == "invalid_json"
    assert rows[0]["updated_at"] == T1  # untouched since
    assert rows[2]["status"] == "enrichment_in_progress" and rows[2]["retry_count"] == 0
    assert rows[1]["retry_count"] == 1  # re-entered from completed: one more attempt
    assert rows[1]["last_attempt"] == T1  # a change that does not set it keeps it
    register_records(lake, "p", _records(3), T0)  # a re-ingest: one more attempt each
    assert read_status(lake, "p")["retry_count"].to_list() == [1, 2, 1]
    assert read_status(lake, "p")["status"].to_list() == ["not_started"] * 3


def test_an_empty_change_leaves_the_file_alone(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    register_records(lake, "p", _records(5), T0)
    before = lake.layer_path("status", "p").stat().st_mtime_ns
    apply_changes(lake, "p", _validation(0), T1)
    assert lake.layer_path("status", "p").stat().st_mtime_ns == before


def test_a_rewrite_in_ranges_of_record_indexes_gives_the_same_statuses(
    tmp_path: Path, monkeypatch
) -> None:
    """The status rewrite runs one range of record indexes at a time (bounded memory):
    ranges that cut the batch, and a batch with gaps in its indexes, change nothing."""
    whole, ranged = Lake(tmp_path / "whole"), Lake(tmp_path / "ranged")
    records = _records(1000).filter(pl.col("record_index") % 7 != 3)  # gaps, as set-asides
    changes = _validation(1000).join(records.select("record_index"), on="record_index")
    register_records(whole, "p", records, T0)
    apply_changes(whole, "p", changes.filter(pl.col("record_index") < 600), T1)
    monkeypatch.setattr("enrichment_assets.status.STATUS_RANGE_ROWS", 64)
    register_records(ranged, "p", records, T0)
    apply_changes(ranged, "p", changes.filter(pl.col("record_index") < 600), T1)

    expected = read_status(whole, "p")
    assert read_status(ranged, "p").equals(expected)
    assert expected["record_index"].to_list() == records["record_index"].to_list()
    assert (
        expected.filter(pl.col("status") == "not_started").height
        == records.filter(pl.col("record_index") >= 600).height
    )
    assert (
        pq.ParquetFile(ranged.layer_path("status", "p")).metadata.num_row_groups == 16
    )  # 1000 / 64
