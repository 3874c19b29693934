"""End to end: the real Dagster daemon turns a dropped file into exports, untouched.

Starts `dagster-daemon run -w workspace.yaml` (which starts its own code server
from the project's workspace) in a new process group, with a temporary
DAGSTER_HOME and data folder and short sensor intervals; drops a file into the
landing folder the way a producer does (write `.part`, then rename); waits, at
most `DEADLINE_S`, for the partition's exports; then stops every process it
started by killing that process group. About a minute on a laptop, most of it
the run worker's start-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from dagster import AssetKey, DagsterInstance, EventLogRecord, RunsFilter
from dagster._core.instance.ref import InstanceRef

from tests.factories import conversation, read_jsonl, write_jsonl
from tests.processes import stop_process_group

pytestmark = pytest.mark.timeout(600)

PROJECT_DIR = Path(__file__).resolve().parents[1]
# A bound that catches a hang, not a speed target: the batch run, the dataset and the
# health automation share two cores with another test worker.
DEADLINE_S = 300
# A batch with nothing rejected has no quarantine export (no line, no file).
EXPORT_KINDS = ("enriched", "training")

INSTANCE_YAML = """\
telemetry:
  enabled: false
sensors:
  use_threads: true
  num_workers: 2
"""


@dataclass
class RunningDaemon:
    home: Path
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    data_dir = tmp_path / "data"
    (data_dir / "landing").mkdir(parents=True)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ENRICH_DATA_DIR": str(data_dir),
        "ENRICH_NEW_FILES_INTERVAL_S": "1",
        "ENRICH_NEW_FILES_SETTLE_S": "1",
        "ENRICH_RETRY_INTERVAL_S": "5",
        "ENRICH_DATASET_AUTOMATION_INTERVAL_S": "2",
        "ENRICH_HEALTH_AUTOMATION_INTERVAL_S": "2",
        "ENRICH_SENSORS_DEFAULT_STATUS": "running",
        "ENRICH_SENSOR_RUN_EXECUTOR": "in_process",
        "GX_ANALYTICS_ENABLED": "false",
    }
    for name in ("ENRICH_LANDING_DIR", "ENRICH_ENRICHER", "ENRICH_APP_DB_URL"):
        env.pop(name, None)
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one kill stops all it starts
        )
    try:
        yield RunningDaemon(home, data_dir, log_path, process)
    finally:
        stop_process_group(process)


def _exports(data_dir: Path) -> dict[str, list[Path]]:
    return {kind: sorted((data_dir / "export" / kind).glob("*.jsonl")) for kind in EXPORT_KINDS}


def test_a_file_dropped_in_the_landing_folder_becomes_exports_with_no_other_action(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    records = [conversation() for _ in range(3)]
    partial = write_jsonl(daemon.landing_dir / "chats-2024-06-01.jsonl.part", records)
    partial.rename(daemon.landing_dir / "chats-2024-06-01.jsonl")

    deadline = time.monotonic() + DEADLINE_S
    exports = _exports(daemon.data_dir)
    while not all(exports.values()) and time.monotonic() < deadline:
        assert daemon.process.poll() is None, f"the daemon exited:\n{daemon.log_tail()}"
        time.sleep(0.5)
        exports = _exports(daemon.data_dir)

    assert all(exports.values()), f"no exports after {DEADLINE_S}s:\n{daemon.log_tail()}"
    (enriched,) = exports["enriched"]
    assert enriched.name.startswith("chats-2024-06-01-")
    documents = read_jsonl(enriched)
    assert sorted(d["conversation_id"] for d in documents) == sorted(
        r["conversation_id"] for r in records
    )
    assert all(d["status"] == "completed" for d in documents)
    assert len(read_jsonl(exports["training"][0])) == 3
    assert not list((daemon.data_dir / "export" / "quarantine").glob("*.jsonl"))

    # Automation then rebuilds the training dataset from the new batch.
    manifest = daemon.data_dir / "export" / "dataset" / "default" / "manifest.json"
    while not manifest.exists() and time.monotonic() < deadline:
        assert daemon.process.poll() is None, f"the daemon exited:\n{daemon.log_tail()}"
        time.sleep(0.5)
    assert manifest.exists(), f"no training dataset after {DEADLINE_S}s:\n{daemon.log_tail()}"
    counts = orjson.loads(manifest.read_bytes())["counts"]
    # The factory's three conversations say the same thing: one line, two exact duplicates.
    assert (counts["completed"], counts["removed"]["exact_duplicate"], counts["kept"]) == (3, 2, 1)

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(daemon.home))) as instance:
        (run,) = [
            r.dagster_run
            for r in instance.get_run_records(RunsFilter(job_name="conversations_pipeline"))
        ]
        assert run.tags["dagster/partition"] == enriched.stem
        assert run.tags["enrich/trigger"] == "new_raw_files"
        assert run.tags["enrich/files"] == "chats-2024-06-01.jsonl"
        assert instance.get_dynamic_partitions("batches") == [enriched.stem]

    # Automation re-computes the health, and evaluates its checks, after the layer run.
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(daemon.home))) as instance:
        health = _health_of_conversations(instance, 3)
        while health is None and time.monotonic() < deadline:
            assert daemon.process.poll() is None, f"the daemon exited:\n{daemon.log_tail()}"
            time.sleep(0.5)
            health = _health_of_conversations(instance, 3)
        assert health is not None, f"no pipeline_health after the layer run:\n{daemon.log_tail()}"
        # Its checks are logged after the materialization: count them once the run is over.
        while not _finished(instance, health.run_id) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _finished(instance, health.run_id), f"health run unfinished:\n{daemon.log_tail()}"
        checks = [
            record
            for record in instance.get_records_for_run(health.run_id).records
            if record.event_log_entry.dagster_event is not None
            and record.event_log_entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        assert len(checks) == 6


def _finished(instance: DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is not None and run.is_finished


def _health_of_conversations(
    instance: DagsterInstance, conversations: int
) -> EventLogRecord | None:
    """The latest pipeline_health materialization record if it counted `conversations`."""
    records = instance.fetch_materializations(AssetKey("pipeline_health"), limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    counted = records[0].asset_materialization.metadata.get("conversations")
    return records[0] if counted is not None and counted.value == conversations else None
