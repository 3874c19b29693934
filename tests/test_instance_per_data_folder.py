"""One data folder, one Dagster instance (the embedded default, DAGSTER_HOME unset).

`enrich run` in one data folder, started from the project folder (where `dagster.yaml`
is), records its runs and batch partitions in `<data dir>/dagster`; a Dagster command
started there the way `dagster dev` starts (the project's `dagster.yaml` and `.env`, a
temporary DAGSTER_HOME) with another ENRICH_DATA_DIR records its run in that other data
folder's instance, and neither sees the other's runs or partitions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from enrichment_assets.cli.instance import INSTANCE_DIR_VARIABLE, dagster_instance
from enrichment_assets.defs.conversations.partitions import batch_partitions
from tests.cli import enrich
from tests.factories import conversation, write_jsonl

PROJECT = Path(__file__).resolve().parents[1]


def _embedded(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data_dir))
    monkeypatch.setenv(INSTANCE_DIR_VARIABLE, "restored after the test")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def _open(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> DagsterInstance:
    _embedded(monkeypatch, data_dir)
    return dagster_instance()


def _partition_keys(instance: DagsterInstance) -> set[str]:
    return set(instance.get_dynamic_partitions(batch_partitions.name))


def _partitions_run(instance: DagsterInstance) -> set[str]:
    return {r.tags.get("dagster/partition") for r in instance.get_runs()} - {None}


def test_each_data_folder_keeps_its_own_runs_and_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(PROJECT)  # where dagster.yaml is: it must not pull runs into ./data
    folder_a, folder_b = tmp_path / "a" / "data", tmp_path / "b" / "data"
    landed = write_jsonl(tmp_path / "in.jsonl", [conversation() for _ in range(2)])
    _embedded(monkeypatch, folder_a)
    done = enrich(capsys, "run", "--no-summaries", "--no-dataset", str(landed))
    assert done.code == 0, done.stderr
    assert (folder_a / "dagster" / "history" / "runs.db").is_file()
    with _open(monkeypatch, folder_a) as a:
        (key,) = _partition_keys(a)
        assert _partitions_run(a) == {key}
        a_runs = a.get_runs_count()

    # `dagster asset materialize` opens its instance as `dagster dev` does: no DAGSTER_HOME,
    # the project's dagster.yaml and .env, a temporary home in the current folder.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env |= {"ENRICH_DATA_DIR": str(folder_b), "GX_ANALYTICS_ENABLED": "false"}
    env.pop(INSTANCE_DIR_VARIABLE, None)
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
         "-m", "enrichment_assets.definitions", "--select", "pipeline_health"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert (folder_b / "dagster" / "history" / "runs.db").is_file()

    with _open(monkeypatch, folder_a) as a, _open(monkeypatch, folder_b) as b:
        assert a.get_runs_count() == a_runs and _partition_keys(a) == {key}
        (run,) = b.get_runs()
        assert run.status == DagsterRunStatus.SUCCESS
        assert {k.to_user_string() for k in run.asset_selection or ()} == {"pipeline_health"}
        assert _partition_keys(b) == set()
