"""`enrich run` ends with the default training dataset: an interrupt during its build
publishes nothing and says so; the next run builds it, gated, and prints its counts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from enrichment_assets.sample_data import write_sample_files

pytestmark = pytest.mark.timeout(300)
ENRICH = str(Path(sys.executable).with_name("enrich"))
DATASET_LINE = re.compile(
    r"training dataset default: (\d+) train \+ (\d+) validation lines of (\d+) completed "
    r"conversations; removed: (.*) -> (.*)"
)


def start(args: list[str], data_dir: Path, **extra: str) -> subprocess.Popen:
    env = {**os.environ, "ENRICH_DATA_DIR": str(data_dir), "GX_ANALYTICS_ENABLED": "false"}
    for name in ("DAGSTER_HOME", "ENRICH_LANDING_DIR", "ENRICH_ENRICHER", "ENRICH_APP_DB_URL"):
        env.pop(name, None)
    return subprocess.Popen(
        [ENRICH, *args],
        env={**env, **extra},
        cwd=data_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("inputs")
    return write_sample_files(folder, 80, files=2, seed=9, formats=("jsonl", "openai_jsonl"))


def test_an_interrupt_during_the_dataset_build_publishes_nothing_and_the_next_run_prints_it(
    tmp_path: Path, inputs: list[Path]
) -> None:
    data_dir = tmp_path / "data"
    marker = tmp_path / "paused"
    process = start(
        ["run", "--no-summaries", *map(str, inputs)],
        data_dir,
        ENRICH_TEST_PAUSE_AT="dataset",
        ENRICH_TEST_PAUSE_FILE=str(marker),
    )
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never reached the dataset"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130
    (line,) = stderr.strip().splitlines()
    assert line.startswith("enrich: interrupted by SIGINT: every partition had completed")
    assert "the training dataset was not rebuilt" in line
    folder = data_dir / "export" / "dataset" / "default"
    assert not [p.name for p in folder.glob("*") if p.name != ".publish.lock"]
    # No staged lines left behind, and no record of a publication (only the near-duplicate
    # verdicts of the rows it compared are kept, for the next build).
    kept = sorted(p.name for p in (data_dir / "lake" / "dataset").iterdir())
    assert kept == ["default.near_duplicates.json"]

    # The next run builds it, gated, and prints its counts and folder.
    rerun = start(["run", "--no-summaries", *map(str, inputs)], data_dir)
    stdout, stderr = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, stderr
    (line,) = [m for m in map(DATASET_LINE.search, stdout.splitlines()) if m]
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    counts = manifest["counts"]
    assert [int(line[i]) for i in (1, 2, 3)] == [
        counts["train"],
        counts["validation"],
        counts["completed"],
    ]
    assert counts["completed"] > 0 and Path(line[5]) == folder.resolve()
    for split in ("train", "validation"):
        lines = (folder / f"{split}.jsonl").read_bytes().count(b"\n")
        assert lines == counts[split] == manifest["files"][f"{split}.jsonl"]["lines"]
    assert set(manifest["partitions"]) == {
        p.stem for p in (data_dir / "lake" / "normalized").glob("*.parquet")
    }
