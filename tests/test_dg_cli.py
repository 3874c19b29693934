"""The `dg` command on the project: `[tool.dg]` in pyproject.toml makes it load the same
Definitions as `dagster dev -w workspace.yaml` (enrichment_assets.definitions)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from enrichment_assets.definitions import defs

PROJECT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"
TIMEOUT_S = 120  # catches a hang; each command takes a few seconds


def _dg(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `dg ARGS...` from the project folder, as a user does, on a temporary data folder."""
    env = {**os.environ, "ENRICH_DATA_DIR": str(data_dir)}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [str(DG), *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_dg_check_defs_is_clean(tmp_path: Path) -> None:
    done = _dg(tmp_path / "data", "check", "defs")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully." in done.stdout
    assert "Warning" not in done.stderr, done.stderr


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    done = _dg(tmp_path_factory.mktemp("dg") / "data", "list", "defs", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return orjson.loads(done.stdout)


def test_dg_lists_the_projects_assets(listed: dict[str, list[dict]]) -> None:
    expected = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert {asset["asset_key"] for asset in listed["assets"]} == expected
    assert {"raw_conversations", "normalized_conversations", "training_dataset"} <= expected
    checks = defs.resolve_asset_graph().asset_check_keys
    assert len(listed["asset_checks"]) == len(checks) > 0


def test_dg_lists_the_projects_sensors_schedules_and_resources(
    listed: dict[str, list[dict]],
) -> None:
    sensors = {sensor["name"] for sensor in listed["sensors"]}
    assert {"new_raw_files", "failed_partitions", "stale_summaries"} <= sensors
    assert {sensor.name for sensor in defs.sensors} <= sensors
    assert [schedule["name"] for schedule in listed["schedules"]] == ["summaries_daily"]
    assert {resource["name"] for resource in listed["resources"]} == set(defs.resources)
