"""`enrich run` on unchanged input costs nothing: no run, no file rewritten; new input runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance

from enrichment_assets.defs.summaries.automation import SUMMARIES_JOB
from enrichment_assets.lake import Lake
from tests.cli import enrich
from tests.factories import conversation, write_jsonl


def _files(lake: Lake) -> dict[Path, tuple[int, int]]:
    """Every file the pipeline publishes (lake and exports), with its inode and mtime."""
    found = {}
    for folder in ("lake", "export"):
        for path in (lake.data_dir / folder).rglob("*"):
            if path.is_file() and not path.name.endswith(".lock"):
                found[path] = (path.stat().st_ino, path.stat().st_mtime_ns)
    return found


def test_enrich_run_again_on_unchanged_input_runs_nothing_and_new_input_runs_alone(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    # One summary day (2024-06-01, the factory's), a user with enough messages on it.
    for name in ("a", "b"):
        write_jsonl(folder / f"{name}.jsonl", [conversation(), conversation(user_id="u-1")])
    first = enrich(capsys, "run", str(folder))
    assert first.code == 0, first.stderr
    runs = instance.get_runs()
    assert {r.job_name for r in runs} >= {"conversations_pipeline", SUMMARIES_JOB}
    published = _files(lake)

    again = enrich(capsys, "run", str(folder))

    assert again.code == 0, again.stderr
    assert "unchanged since their last run, not run again: 2 partition(s)" in again.stdout
    assert len(instance.get_runs()) == len(runs)  # no partition, day, dataset or health run
    assert _files(lake) == published  # no file rewritten (same inodes and times)
    assert "rows per layer" in again.stdout  # the same report of what the lake holds

    # A new file: only its partition runs; the other two keep their runs and files.
    write_jsonl(folder / "c.jsonl", [conversation()])
    third = enrich(capsys, "run", str(folder))

    assert third.code == 0, third.stderr
    assert "not run again: 2 partition(s)" in third.stdout
    pipeline_runs = [r for r in instance.get_runs() if r.job_name == "conversations_pipeline"]
    assert len(pipeline_runs) == 3
    raw_files = {p: i for p, i in published.items() if p.parent.name == "raw"}
    assert {p: i for p, i in _files(lake).items() if p in raw_files} == raw_files
