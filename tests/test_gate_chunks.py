"""A quality gate run in chunks judges a partition exactly as one frame of every row does.

Real GX suites (expectations/*.json) on real layer files; the same file is validated
with chunks of 3 rows and in one chunk, and every expectation's verdict and counts
must match. A partition small enough (`ENRICH_GATE_FRAME_ROWS`) is judged on one frame
whatever the chunk size: these tests set it to 0 unless they test it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

import enrichment_assets.checks.gx_context as gx_context
import enrichment_assets.defs.checks as gate_checks
from enrichment_assets.checks.gate_chunks import (
    GATE_CHUNK_ROWS_ENV,
    GATE_FRAME_ROWS_ENV,
    HASH,
    ROWS,
    chunk_plan,
    frame_rows,
)
from enrichment_assets.checks.gate_frame import gate_frames
from enrichment_assets.defs.checks import validate_layer
from enrichment_assets.lake import Lake

PARTITION = "p1"
GOOD_HASH = "a" * 64
ID = "0b8e7c0e-2f4f-4d7e-9a55-4f0f4b1c1a{:02d}"


@pytest.fixture(autouse=True)
def _chunked_whatever_the_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """A partition is chunked as soon as it is bigger than one chunk."""
    monkeypatch.setenv(GATE_FRAME_ROWS_ENV, "0")


def _raw_layer(path: Path, rows: int = 17) -> Path:
    """A raw layer file with defects spread over every chunk: repeated ids far apart,
    a bad hash, a NULL id, parse errors, an unknown format."""
    ids = [ID.format(i % 7) for i in range(rows)]  # each id repeated, chunks apart
    ids[5] = None  # type: ignore[call-overload]
    ids[16] = ID.format(99)  # one id seen once
    pl.DataFrame(
        {
            "partition": [PARTITION] * rows,
            "record_index": list(range(rows)),
            "ingested_at": [datetime(2024, 6, 1, tzinfo=UTC)] * rows,
            "source_file": ["in.jsonl"] * rows,
            "position": list(range(1, rows + 1)),
            "raw_text": ["{}"] * rows,
            "content_hash": [GOOD_HASH if i != 9 else "not-a-hash" for i in range(rows)],
            "source_format": ["canonical" if i != 12 else "weird" for i in range(rows)],
            "record_json": ["{}"] * rows,
            "conversation_id": ids,
            "parse_error": [None if i % 4 else f"bad line {i}" for i in range(rows)],
            "parse_rule": [None if i % 4 else "invalid_json" for i in range(rows)],
        }
    ).write_parquet(path, row_group_size=5)
    return path


def _failures(lake: Lake, path: Path) -> dict[str, dict]:
    report = validate_layer(lake, "raw_conversations", path, PARTITION)
    found = {}
    for check in report.check_results:
        for failure in check.metadata["failures"].value:
            found[f"{failure['expectation']}:{failure['column']}"] = failure
    return found


def test_chunked_gate_gives_the_verdicts_and_counts_of_one_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _raw_layer(tmp_path / "raw.parquet")
    monkeypatch.setenv(GATE_CHUNK_ROWS_ENV, "1000000")
    whole = _failures(Lake(tmp_path / "whole"), path)
    monkeypatch.setenv(GATE_CHUNK_ROWS_ENV, "3")
    chunked = _failures(Lake(tmp_path / "chunked"), path)

    assert sorted(chunked) == sorted(whole)
    # The defects planted above, each found with its count.
    assert whole["expect_column_values_to_match_regex:content_hash"]["unexpected_count"] == 1
    assert whole["expect_column_values_to_be_in_set:source_format"]["unexpected_count"] == 1
    assert whole["expect_column_values_to_not_be_null:conversation_id"]["unexpected_count"] == 1
    assert whole["expect_column_values_to_be_unique:conversation_id"]["unexpected_count"] == 14
    for name, failure in whole.items():
        mine = chunked[name]
        for key in ("evaluated", "unexpected_count", "unexpected_percent", "observed_value"):
            assert mine[key] == failure[key], (name, key)
        if chunk_plan({"type": failure["expectation"], "kwargs": {"column": name}}).split == ROWS:
            assert mine["unexpected_values"] == failure["unexpected_values"], name
        else:  # the repeats are met bucket by bucket: the same values, in another order
            assert sorted(map(json.dumps, mine["unexpected_values"])) == sorted(
                map(json.dumps, failure["unexpected_values"])
            )


def test_chunked_gate_writes_one_data_docs_page_for_the_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(GATE_CHUNK_ROWS_ENV, "4")
    lake = Lake(tmp_path / "data")
    report = validate_layer(lake, "raw_conversations", _raw_layer(tmp_path / "r.parquet"), "p1")
    assert report.docs_page is not None and report.docs_page.is_file()
    pages = list(
        (lake.reports_dir / "data_docs" / "validations" / "raw_conversations").rglob("*.html")
    )
    assert pages == [report.docs_page]
    assert "not-a-hash" in report.docs_page.read_text(encoding="utf-8")


def test_data_docs_keep_the_latest_results_and_archive_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each update lists every stored result: the store keeps what the index shows."""
    monkeypatch.setattr(gx_context, "DOCS_INDEX_RESULTS", 3)
    lake = Lake(tmp_path / "data")
    layer = _raw_layer(tmp_path / "r.parquet")
    pages = [validate_layer(lake, "raw_conversations", layer, f"p{i}").docs_page for i in range(5)]
    store = lake.reports_dir / "gx" / "validations" / "raw_conversations"
    archive = lake.reports_dir / "gx" / "archive" / "raw_conversations"
    assert sorted(p.name for p in store.iterdir()) == ["p2", "p3", "p4"]
    assert sorted(p.name for p in archive.iterdir()) == ["p0", "p1"]
    assert len(list(archive.rglob("*.json"))) == 2  # moved whole, not deleted
    index = (lake.reports_dir / "data_docs" / "index.html").read_text(encoding="utf-8")
    assert "/p4/" in index and "/p2/" in index and "/p1/" not in index and "/p0/" not in index
    assert all(p is not None and p.is_file() for p in pages)  # every page still there
    assert gx_context.archive_old_results(lake.reports_dir.resolve()) == 0


def test_every_chunk_is_bounded_and_every_row_is_in_one(tmp_path: Path) -> None:
    path = _raw_layer(tmp_path / "raw.parquet", rows=50)
    columns = {"record_index", "conversation_id"}
    by_rows = chunk_plan({"type": "expect_column_values_to_not_be_null"})
    frames = list(gate_frames(path, columns, by_rows, chunk_rows=8))
    assert all(0 < len(f) <= 8 for f in frames)
    assert [i for f in frames for i in f.index] == list(range(50))  # the file's positions

    unique = chunk_plan(
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "record_index"}}
    )
    assert unique.split == HASH
    frames = list(gate_frames(path, columns, unique, chunk_rows=8))
    assert len(frames) == 7  # ceil(50 / 8) buckets
    assert sorted(i for f in frames for i in f.index) == list(range(50))
    assert sorted(v for f in frames for v in f["record_index"]) == list(range(50))


def test_a_value_repeated_in_every_row_is_spread_in_pairs_over_bounded_buckets(
    tmp_path: Path,
) -> None:
    """One value in every row (every invalid line of a file gets the same id) does not
    make one bucket of every row: its repeats go in pairs (the odd one out joins the
    last pair), so each bucket stays near the chunk size and still sees the value at
    least twice, dictionary-encoded."""
    path = _raw_layer(tmp_path / "raw.parquet", rows=41)
    plan = chunk_plan(
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "source_file"}}
    )
    frames = [f for f in gate_frames(path, {"source_file"}, plan, chunk_rows=8) if len(f)]
    assert len(frames) >= 3
    assert all(2 <= len(f) <= 24 for f in frames), [len(f) for f in frames]
    assert sorted(i for f in frames for i in f.index) == list(range(41))
    for frame in frames:
        assert frame["source_file"].dtype == "category"
        assert list(frame["source_file"].cat.categories) == ["in.jsonl"]


def test_the_uniqueness_counts_of_a_heavily_repeated_value_are_those_of_one_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repeats of 2, 3, 5 and 301 rows among unique values, over buckets of 8 rows: the
    uniqueness expectation counts every repeat unexpected, as on one frame."""
    counts = {"two": 2, "three": 3, "five": 5, "heavy": 301}
    ids = [name for name, n in counts.items() for _ in range(n)] + [f"u{i}" for i in range(60)]
    path = _raw_layer(tmp_path / "raw.parquet", rows=len(ids))
    pl.read_parquet(path).with_columns(pl.Series("conversation_id", ids)).write_parquet(
        path, row_group_size=50
    )
    monkeypatch.setenv(GATE_CHUNK_ROWS_ENV, "8")
    chunked = _failures(Lake(tmp_path / "chunked"), path)[
        "expect_column_values_to_be_unique:conversation_id"
    ]
    monkeypatch.setenv(GATE_CHUNK_ROWS_ENV, "1000000")
    whole = _failures(Lake(tmp_path / "whole"), path)[
        "expect_column_values_to_be_unique:conversation_id"
    ]
    assert chunked["unexpected_count"] == whole["unexpected_count"] == sum(counts.values())
    assert chunked["evaluated"] == whole["evaluated"] == len(ids)


def test_a_partition_up_to_the_frame_rows_is_one_frame_and_a_bigger_one_is_chunked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to ENRICH_GATE_FRAME_ROWS rows, every expectation is judged on one frame of the
    whole file (read once); one row more and the frames are chunks again, the verdicts
    the same."""
    path = _raw_layer(tmp_path / "raw.parquet", rows=20)
    frames: list[int] = []

    def counted(*args: object, **kwargs: object):  # the real reader, its frames counted
        for frame in gate_frames(*args, **kwargs):  # type: ignore[arg-type]
            frames.append(len(frame))
            yield frame

    monkeypatch.setattr(gate_checks, "gate_frames", counted)
    monkeypatch.setenv(GATE_CHUNK_ROWS_ENV, "3")
    monkeypatch.setenv(GATE_FRAME_ROWS_ENV, "20")
    assert frame_rows(20) is None and frame_rows(21) == 3
    whole = _failures(Lake(tmp_path / "whole"), path)
    assert frames == [20]

    frames.clear()
    monkeypatch.setenv(GATE_FRAME_ROWS_ENV, "19")
    chunked = _failures(Lake(tmp_path / "chunked"), path)
    assert len(frames) > 7 and max(frames) <= 6 and sum(frames) >= 2 * 20, frames
    assert sorted(chunked) == sorted(whole)
    for name, failure in whole.items():
        assert chunked[name]["unexpected_count"] == failure["unexpected_count"], name


def test_the_frame_rows_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GATE_FRAME_ROWS_ENV, "-1")
    with pytest.raises(ValueError, match="ENRICH_GATE_FRAME_ROWS='-1': expected at least 0"):
        frame_rows(10)
