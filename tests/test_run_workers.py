"""Many run workers at once: separate processes sharing only the Dagster instance on
PostgreSQL, the application database, the lake on object storage (a real SeaweedFS: no
shared folder, each worker its own working copy) and the LLM endpoint (`enrich worker`).

Four workers backfill the partitions while one of them is killed with `kill -9` in the
middle of a partition; a single worker does the same backfill in a cluster of its own,
its lake a local folder (the object store's pulls and pushes cost it nothing then).
The exports must be equal byte for byte, no conversation exported twice, each conversation
paid for once (counted by the loopback server), and the killed worker's partition finished
by another worker with no one stepping in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from dagster import DagsterRunStatus, RunsFilter

from enrichment_assets.app_db import seed_reference_tables, upgrade
from enrichment_assets.cli.run_worker import WORKER_TAG
from enrichment_assets.debris import pid_alive
from enrichment_assets.defs.run_liveness import PID_TAG
from enrichment_assets.reference import REFERENCE_TABLES, SEEDS_DIR
from tests.factories import conversation, message, write_jsonl
from tests.llm_server import Faults, LoopbackLLMServer
from tests.object_store import S3Server
from tests.postgres import requires_postgres
from tests.worker_pool import ENRICH, Cluster

pytestmark = [requires_postgres, pytest.mark.timeout(900)]

# 8 partitions (2 per worker) keep the test short: a run costs ~2-6 s of the machine
# whatever its size; benchmarks/bench_workers.py backfills 40 with the same checks.
PARTITIONS, PER_PARTITION, WORKERS = 8, 5, 4
# The conversations of one batch hang at the endpoint until their worker is killed: it
# dies mid-run (its enrichment in flight) having paid for none of them. (Had it paid for
# some, their rows would say 0 tokens after the recovery, like any cache hit: a row's
# tokens are what the run that wrote it paid, which is not what a single worker writes.)
STALL = "STALL-HERE"
STALLED_FILE = 5


def marker(batch: int) -> str:
    return STALL if batch == STALLED_FILE else ""


@pytest.fixture
def lake_env(
    s3_server: S3Server,
    s3_bucket: str,
) -> Callable[[str], dict[str, str]]:
    """Where a cluster's lake is: a prefix of its own in the object store
    (`{"ENRICH_DATA_DIR": folder}` would share a local folder instead)."""
    return lambda name: s3_server.env(f"s3://{s3_bucket}/{name}")


def input_files(folder: Path) -> list[Path]:
    files = []
    for i in range(PARTITIONS):
        records = [
            conversation(
                messages=[
                    message("user", f"Question {i}-{j} about refunds? {marker(i)}"),
                    message("assistant", f"Answer {i}-{j}: open the refunds page."),
                ]
            )
            for j in range(PER_PARTITION)
        ]
        files.append(write_jsonl(folder / f"batch-{i:02d}.jsonl", records))
    return files


def make_cluster(
    name: str, root: Path, new_database: Callable[[str], str], lake: dict[str, str], llm: str
) -> Cluster:
    app = new_database(f"{name}_app")
    upgrade(app)
    seed_reference_tables(app, SEEDS_DIR, REFERENCE_TABLES)
    return Cluster(root / name, new_database(f"{name}_dagster"), app, lake, llm)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 600) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def stalled_worker_pid(cluster: Cluster, server: LoopbackLLMServer, partition: str) -> int:
    """The pid of the worker whose run of `partition` waits on the stalled request."""
    wait_for(lambda: any(STALL in text for text in server.counters.texts), "the stalled request")
    with cluster.instance() as instance:
        runs = instance.get_runs(
            filters=RunsFilter(
                tags={"dagster/partition": partition}, statuses=[DagsterRunStatus.STARTED]
            )
        )
    (run,) = runs
    return int(run.tags[PID_TAG])


def is_zombie_then_reaped(process: subprocess.Popen) -> bool:
    """Killed and not yet reaped, the worker is dead to `pid_alive` already; then reaped,
    as a container runtime does."""
    wait_for(lambda: not pid_alive(process.pid), "the killed worker to be dead")
    process.wait(timeout=60)
    return True


def test_four_workers_backfill_like_one_and_recover_a_killed_one(
    tmp_path: Path, new_database: Callable[[str], str], lake_env: Callable[[str], dict[str, str]]
) -> None:
    files = input_files(tmp_path / "input")
    faults = Faults(targeted={STALL: "drip"}, drip_interval_s=600)
    with LoopbackLLMServer() as single_llm, LoopbackLLMServer(faults) as llm:
        local = {"ENRICH_DATA_DIR": str(tmp_path / "single-lake")}
        single = make_cluster("single", tmp_path, new_database, local, single_llm.base_url)
        many = make_cluster("many", tmp_path, new_database, lake_env("many"), llm.base_url)
        partitions = many.land(files)
        assert single.land(files) == partitions
        reference = single.start_worker("worker")
        workers = {w.pid: w for w in (many.start_worker(f"worker-{i}") for i in range(WORKERS))}

        killed = workers[stalled_worker_pid(many, llm, partitions[STALLED_FILE])]
        os.killpg(killed.pid, signal.SIGKILL)  # a lost pod: no chance to clean up
        assert is_zombie_then_reaped(killed)
        llm.configure(Faults(), keep_counters=True)  # the endpoint answers again

        outcomes = {pid: w.communicate(timeout=600) for pid, w in workers.items()}
        reference_out = reference.communicate(timeout=600)
        assert reference.returncode == 0, reference_out[1][-3000:]
        assert killed.returncode == -signal.SIGKILL
        for pid, worker in workers.items():
            if worker is not killed:
                assert worker.returncode == 0, outcomes[pid][1][-3000:]
        single_paid, many_paid = single_llm.counters.successes, llm.counters.successes

    # Byte for byte what one worker exports, every conversation once.
    exported = many.export_files()
    said = [
        line for _, err in outcomes.values() for line in err.splitlines() if "partition" in line
    ]
    assert exported == single.export_files(), said
    ids = [
        orjson.loads(line)["conversation_id"]
        for name, data in exported.items()
        if name.startswith("export/enriched/")
        for line in data.splitlines()
    ]
    assert len(ids) == len(set(ids)) == PARTITIONS * PER_PARTITION
    # Each conversation paid for once, the one whose worker died included.
    assert set(many_paid) == set(single_paid) and len(many_paid) == PARTITIONS * PER_PARTITION
    assert set(many_paid.values()) == {1}
    # The killed worker's run was found dead and its partition run again by another.
    recovered = sum("recovered 1 dead run" in out for out, _ in outcomes.values())
    assert recovered == 1, [out for out, _ in outcomes.values()]
    with many.instance() as instance:
        runs = instance.get_runs(
            filters=RunsFilter(tags={"dagster/partition": partitions[STALLED_FILE]})
        )
        statuses = sorted(run.status.value for run in runs)
        assert statuses == ["FAILURE", "SUCCESS"]
        assert {run.tags[WORKER_TAG] for run in runs} and all(
            run.status != DagsterRunStatus.STARTED
            for run in instance.get_runs(filters=RunsFilter(tags={}))
        )
    # No folder shared: each process wrote its own, the lake is in the object store.
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == sorted(
        ["operator", "reader", *(f"worker-{i}" for i in range(WORKERS))]
    )
    assert not subprocess.run(["pgrep", "-g", str(killed.pid)], capture_output=True).stdout
    # Nothing temporary reached the store (a killed upload leaves no object).
    stored = many.store_listing()
    assert stored and not [key for key in stored if key.endswith(".tmp") or "tmp_" in key]


def test_a_worker_without_the_application_database_says_so_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ENRICH_APP_DB_URL", "DAGSTER_HOME")}
    done = subprocess.run(
        [ENRICH, "worker", "--until-idle"],
        env={**env, "ENRICH_DATA_DIR": str(tmp_path / "data")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "enrich: error: enrich worker claims partitions in PostgreSQL: set ENRICH_APP_DB_URL"
    ]
