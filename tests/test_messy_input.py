"""Messy input end to end: one bad file, line, byte or record costs only itself.

A folder like the one of issue 15 (23 files) through every layer, and `enrich run`
on real files with odd names, FIFOs, links and missing paths: its exit code, its
one line per problem, and landing by content. Real Dagster instance, real lake.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
import polars as pl
import pytest
from dagster import DagsterInstance

from enrichment_assets.cli.runner import add_partitions, materialize_partitions
from enrichment_assets.inputs import inspect_file
from enrichment_assets.lake import Lake
from enrichment_assets.landing_store import register_batch
from enrichment_assets.queries import layer_counts
from tests.cli import enrich
from tests.factories import conversation, read_jsonl, write_jsonl
from tests.messy_inputs import write_messy_folder


def test_a_messy_folder_costs_only_its_bad_items(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messy = write_messy_folder(tmp_path / "messy")
    files = sorted(messy.folder.iterdir())
    assert len(files) == 23
    # One batch for the whole folder, as a sensor tick would group it: one run, not 23.
    registration = register_batch(lake, [inspect_file(path) for path in files])
    assert registration.manifest is not None
    partition = registration.manifest.batch
    add_partitions(instance, [partition])

    (outcome,) = materialize_partitions(instance, [partition])

    assert outcome.success, outcome.error or outcome.failed_checks
    counts = layer_counts(lake)[partition]
    assert counts["raw"] == counts["validated"] + counts["quarantined"]
    assert counts["quarantined"] == len(messy.rejected)
    assert counts["completed"] == len(messy.completed_ids) + messy.completed_without_id
    enriched = read_jsonl(lake.export_path("enriched", partition))
    assert messy.completed_ids <= {doc["conversation_id"] for doc in enriched}
    # Every rejected record is in the quarantine export, under its reason.
    quarantined = {
        (Path(row["source_file"]).name, row["position"]): row
        for row in read_jsonl(lake.export_path("quarantine", partition))
    }
    assert {key: row["validation_errors"][0]["rule"] for key, row in quarantined.items()} == (
        messy.rejected
    )
    assert quarantined[("14-empty.json", 0)]["validation_errors"] == [
        {"rule": "empty_file", "path": "$", "value": "cannot be read: empty file"}
    ]
    nul = quarantined[("17-raw-nul.jsonl", 2)]["validation_errors"][0]["value"]
    assert nul.startswith("raw control byte 0x00 at byte ") and "(line 2)" in nul
    # The stray Latin-1 byte was repaired (flagged on the raw row) and its record completed.
    raw = pl.read_parquet(lake.layer_path("raw", partition))
    repaired = raw.filter(pl.col("parse_rule") == "encoding_repaired")
    assert repaired["source_file"].to_list() == [str(messy.folder / "16-stray-latin1-byte.jsonl")]
    assert repaired["conversation_id"][0] in messy.completed_ids

    # `enrich status ID --json` shows each rejected record's report, file-level ones too.
    for key in [
        ("14-empty.json", 0),
        ("18-deep-nesting.jsonl", 2),
        ("22-contract-failures.jsonl", 2),
    ]:
        shown = enrich(capsys, "status", quarantined[key]["conversation_id"], "--json")
        assert shown.code == 0, shown.stderr
        status = shown.json()
        assert status["status"] == "validation_failed"
        assert status["validation_errors"][0]["rule"] == messy.rejected[key]
    report = enrich(capsys, "report", "--json").json()
    assert (report["raw"], report["quarantined"]) == (counts["raw"], len(messy.rejected))
    assert report["partitions"][partition]["quarantined"] == len(messy.rejected)


def test_enrich_run_reads_every_file_it_can_and_exits_1_with_one_line_per_problem(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    long_name = folder / ("l" * 238 + ".jsonl")  # 244 bytes
    write_jsonl(long_name, [conversation(), conversation(tier="gold")])  # one quarantined
    odd_name = Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9 \x1b[31m.jsonl"))
    write_jsonl(odd_name, [conversation()])
    dash = folder / "-rf.jsonl"
    shutil.copy(long_name, dash)  # the same bytes: landed once
    os.mkfifo(folder / "pipe.jsonl")
    os.symlink(folder / "loop-b", folder / "loop-a")
    os.symlink(folder / "loop-a", folder / "loop-b")
    (folder / "empty.json").write_bytes(b"")
    missing = [str(tmp_path / f"missing-{n:02d}.jsonl") for n in range(20)]

    result = enrich(
        capsys,
        "run",
        "--no-summaries",
        "--",
        str(dash),
        str(long_name),
        os.fsdecode(odd_name),
        str(folder / "pipe.jsonl"),
        str(folder / "loop-a"),
        str(folder / "empty.json"),
        *missing,
    )

    assert result.code == 1
    assert "Traceback" not in result.stderr and "Errno" not in result.stderr
    lines = result.stderr.strip().splitlines()
    # FIFO + loop + empty file + 20 missing paths = 23 problems: 20 lines, then a count.
    assert lines[-2:] == [
        "enrich: and 3 more",
        "enrich: error: 23 of 26 file(s) could not be read",
    ]
    problems = lines[-22:-2]
    assert problems[0].startswith(f"enrich: {folder}/pipe.jsonl: not a regular file (a FIFO) (")
    assert problems[1].startswith(f"enrich: {folder}/loop-a: not a regular file (a symbolic link")
    assert problems[2].startswith(f"enrich: {folder}/empty.json: cannot be read: empty file")
    assert problems[3:] == [f"enrich: {path}: no such file or folder" for path in missing[:17]]
    # Every readable file completed; the copy is named with the partition that holds it.
    (first, odd, problem_batch) = instance.get_dynamic_partitions("batches")
    assert f"{folder}/l{'l' * 237}.jsonl: already landed, in partition {first}" in result.stdout
    assert "caf\\xe9 \\x1b[31m.jsonl" in lake.load_manifest(odd).files[0].source_path
    counts = layer_counts(lake)
    assert (counts[first]["completed"], counts[first]["quarantined"]) == (1, 1)
    assert counts[odd]["completed"] == 1
    assert counts[problem_batch]["quarantined"] == 3


def test_enrich_run_lands_bytes_once_whatever_the_name_and_a_rerun_is_idempotent(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "a" / "chats.jsonl", [conversation(), conversation(tier="x")])
    copy = tmp_path / "b" / "chats-renamed.jsonl"
    copy.parent.mkdir()
    shutil.copy(source, copy)

    first = enrich(capsys, "run", "--no-summaries", str(source), str(copy))
    assert first.code == 0, first.stderr  # a quarantined record is normal business
    (partition,) = instance.get_dynamic_partitions("batches")
    assert f"{copy}: already landed, in partition {partition}" in first.stdout
    export = lake.export_path("enriched", partition).read_bytes()

    again = enrich(capsys, "run", "--no-summaries", str(copy))
    assert again.code == 0, again.stderr
    assert f"{copy}: already landed, in partition {partition}" in again.stdout
    assert instance.get_dynamic_partitions("batches") == [partition]
    assert lake.export_path("enriched", partition).read_bytes() == export
    runs = [r for r in instance.get_runs() if r.tags.get("dagster/partition") == partition]
    # Its inputs did not change since that run succeeded: not run again, as it says.
    assert len(runs) == 1
    assert "unchanged since their last run, not run again: 1 partition(s)" in again.stdout
    assert orjson.loads(export.splitlines()[0])["status"] == "completed"
