"""`enrich run` on unchanged input costs nothing: no run, no file rewritten; new input runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance

from enrichment_assets.lake import Lake
from enrichment_assets.sample_data import write_sample_files
from enrichment_assets.summaries_automation import SUMMARIES_JOB
from tests.cli import enrich


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
    write_sample_files(folder, 40, files=2, seed=21)
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
    (new_file,) = write_sample_files(tmp_path / "more", 20, files=1, seed=22)
    (folder / new_file.name).write_bytes(new_file.read_bytes())
    third = enrich(capsys, "run", str(folder))

    assert third.code == 0, third.stderr
    assert "not run again: 2 partition(s)" in third.stdout
    pipeline_runs = [r for r in instance.get_runs() if r.job_name == "conversations_pipeline"]
    assert len(pipeline_runs) == 3
    raw_files = {p: i for p, i in published.items() if p.parent.name == "raw"}
    assert {p: i for p, i in _files(lake).items() if p in raw_files} == raw_files
