"""The daemon's runs stop on SIGTERM as Kubernetes sends it, and are then retried.

A real `dagster-daemon` (with its own code server) runs a dropped file; the run is held
at enrichment by the test-only pause hook; the test sends SIGTERM to the run's process,
as the kubelet does when it evicts a run pod, and checks that the run ends failed within
seconds, that the `failed_partitions` sensor asks for the partition again, and that the
retry completes it: exports written, nothing left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.instance.ref import InstanceRef

from tests.factories import conversation, read_jsonl, write_jsonl
from tests.processes import stop_process_group
from tests.test_daemon_e2e import INSTANCE_YAML, PROJECT_DIR

pytestmark = pytest.mark.timeout(400)
DEADLINE_S = 300  # catches a hang; two test workers share the machine


def test_a_daemon_run_stops_on_sigterm_and_is_retried_to_completion(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    data_dir = tmp_path / "data"
    (data_dir / "landing").mkdir(parents=True)
    marker = tmp_path / "paused"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ENRICH_DATA_DIR": str(data_dir),
        "ENRICH_NEW_FILES_INTERVAL_S": "1",
        "ENRICH_NEW_FILES_SETTLE_S": "1",
        "ENRICH_RETRY_INTERVAL_S": "2",
        "ENRICH_RETRY_BACKOFF_S": "1,1,1",
        "ENRICH_SENSORS_DEFAULT_STATUS": "running",
        "ENRICH_SENSOR_RUN_EXECUTOR": "in_process",
        "ENRICH_TEST_PAUSE_AT": "enriched",
        "ENRICH_TEST_PAUSE_FILE": str(marker),
        "GX_ANALYTICS_ENABLED": "false",
    }
    for name in ("ENRICH_LANDING_DIR", "ENRICH_ENRICHER", "ENRICH_APP_DB_URL"):
        env.pop(name, None)
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def tail() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])

    try:
        records = [conversation() for _ in range(4)]
        partial = write_jsonl(data_dir / "landing" / "chats.jsonl.part", records)
        partial.rename(data_dir / "landing" / "chats.jsonl")
        deadline = time.monotonic() + DEADLINE_S
        while not marker.exists():
            assert daemon.poll() is None, tail()
            assert time.monotonic() < deadline, f"the run never reached enrichment:\n{tail()}"
            time.sleep(0.2)
        run_pid = int(marker.read_text().split()[1])

        os.kill(run_pid, signal.SIGTERM)  # what the kubelet sends to a run pod's process
        sent = time.monotonic()
        with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
            while True:
                runs = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
                if runs:
                    break
                assert time.monotonic() - sent < 60, f"the run did not end:\n{tail()}"
                time.sleep(0.2)
            stopped_after = time.monotonic() - sent
            (interrupted,) = runs
            partition = interrupted.tags["dagster/partition"]

            export = data_dir / "export" / "enriched" / f"{partition}.jsonl"
            while not export.exists():
                assert time.monotonic() < deadline + 60, f"no retry completed it:\n{tail()}"
                time.sleep(0.5)
            retries = instance.get_runs(filters=RunsFilter(tags={"dagster/partition": partition}))
            assert any(r.tags.get("enrich/retry_of") == interrupted.run_id for r in retries)
        assert stopped_after < 15, f"the run took {stopped_after:.1f} s to stop"
        assert len(read_jsonl(export)) == 4
        assert not [p for p in (data_dir / "lake").rglob("*.tmp")]
    finally:
        stop_process_group(daemon)
