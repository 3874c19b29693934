"""Crash safety: kill -9 at every stage, SIGINT, SIGTERM, a full disk, two commands at once.

Each scenario runs the real `enrich` console script in its own process group on real
files, breaks it the way an operator or the machine would, then checks what an operator
relies on: before recovery no report says all is well; one plain `enrich run` (or the
`failed_partitions` sensor) brings the lake to exactly the clean run's result, byte for
byte; no temporary file, scratch folder or claim is left behind; statuses agree with the
exports. The crash points are picked with the test-only hooks of `enrichment_assets.faults`.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, build_sensor_context
from dagster._core.instance.ref import InstanceRef

from enrichment_assets.defs.automation.failed_partitions import failed_partitions_tick
from enrichment_assets.defs.automation.settings import RetrySettings
from enrichment_assets.defs.run_liveness import active_partitions
from enrichment_assets.health_metrics import pipeline_health
from enrichment_assets.lake import HOST_TAG, Lake
from enrichment_assets.low_confidence import LowConfidenceRule
from enrichment_assets.sample_data import write_sample_files
from enrichment_assets.status import read_status

pytestmark = pytest.mark.timeout(600)

ENRICH = str(Path(sys.executable).with_name("enrich"))
EXPORT_KINDS = ("enriched", "training", "quarantine")


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str
    seconds: float


def enrich_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "ENRICH_DATA_DIR": str(data_dir),
        "GX_ANALYTICS_ENABLED": "false",
        **extra,
    }
    for name in ("DAGSTER_HOME", "ENRICH_LANDING_DIR", "ENRICH_ENRICHER", "ENRICH_APP_DB_URL"):
        env.pop(name, None)
    return env


def start(args: list[str], data_dir: Path, **extra: str) -> subprocess.Popen:
    """`enrich ARGS` in its own process group (as a shell job), cwd outside the project."""
    return subprocess.Popen(
        [ENRICH, *args],
        env=enrich_env(data_dir, **extra),
        cwd=data_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> Finished:
    began = time.monotonic()
    stdout, stderr = process.communicate(timeout=timeout)
    return Finished(process.returncode, stdout, stderr, time.monotonic() - began)


def enrich(args: list[str], data_dir: Path, **extra: str) -> Finished:
    return finish(start(args, data_dir, **extra))


def instance_of(data_dir: Path) -> DagsterInstance:
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(data_dir / "dagster")))


def snapshot(data_dir: Path) -> dict[str, bytes]:
    """Every export file, by relative path; summary lines without `generated_at`, and the
    training dataset's provenance without `run_id` (a recovered batch is another run)."""
    files: dict[str, bytes] = {}
    for path in sorted((data_dir / "export").rglob("*.jsonl")):
        data = path.read_bytes()
        volatile = {"summaries": "generated_at", "provenance.jsonl": "run_id"}
        if field := volatile.get(path.parent.name) or volatile.get(path.name):
            lines = [orjson.loads(line) for line in data.splitlines()]
            data = b"\n".join(
                orjson.dumps({k: v for k, v in line.items() if k != field}) for line in lines
            )
        files[str(path.relative_to(data_dir))] = data
    return files


def leftovers(data_dir: Path) -> list[str]:
    """Temporary files, claims and scratch folders of this machine's dead writers."""
    found = [
        str(p)
        for folder in ("lake", "export", "reports", "cache")
        for p in (data_dir / folder).rglob("*")
        if p.is_file() and (p.name.endswith(".tmp") or p.name.startswith("tmp_"))
    ]
    found += [str(p) for p in (data_dir / "lake" / "claims").glob("*")]
    for root in (Path("/dev/shm"), Path("/tmp")):
        found += [
            str(p)
            for p in root.glob(f"enrich-{HOST_TAG}-*")
            if not _alive(int(p.name.split("-")[2]))
        ]
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def statuses_agree_with_exports(lake: Lake) -> None:
    for path in sorted((lake.data_dir / "lake" / "status").glob("*.parquet")):
        partition = path.stem
        completed = read_status(lake, partition).filter(
            read_status(lake, partition)["status"] == "completed"
        )
        for kind in ("enriched", "training"):
            export = lake.export_path(kind, partition)
            # A kind with no line has no file (exports.py).
            lines = export.read_bytes().count(b"\n") if export.exists() else 0
            assert lines == completed.height, (partition, kind, lines, completed.height)


def health(data_dir: Path) -> dict:
    lake = Lake(data_dir)
    with instance_of(data_dir) as instance:
        return pipeline_health(
            lake, active_partitions(instance, lake), low_confidence=LowConfidenceRule.from_env()
        )


def _session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this test session that every test worker (pytest-xdist) shares."""
    root = tmp_path_factory.getbasetemp()
    # Under xdist each worker's root is inside the session's; alone, the root is the session's.
    shared = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "crash-reference"
    shared.mkdir(exist_ok=True)
    return shared


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two small files of generated conversations (their days have summaries).

    One folder for the whole session: the quarantine export names each record's source
    file by its path, so every worker must read the very files the reference run read.
    """
    shared = _session_dir(tmp_path_factory)
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        folder = shared / "inputs"
        if not folder.exists():
            staging = shared / "inputs.partial"
            shutil.rmtree(staging, ignore_errors=True)
            write_sample_files(
                staging, 120, files=2, seed=5, formats=("jsonl", "openai_jsonl"), defect_rate=0.05
            )
            staging.rename(folder)
        return sorted(folder.iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, inputs: list[Path]) -> dict[str, bytes]:
    """The exports of a clean run of the same files, daily summaries included.

    Computed once per test session: test workers (pytest-xdist) share it through a file in
    the session's temporary root, the first one computing it under a lock.
    """
    shared = _session_dir(tmp_path_factory)
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored = shared / "exports.pickle"
        if stored.exists():
            return pickle.loads(stored.read_bytes())
        data_dir = tmp_path_factory.mktemp("reference") / "data"
        done = enrich(["run", *map(str, inputs)], data_dir)
        assert done.code == 0, done.stderr
        exports = snapshot(data_dir)
        stored.write_bytes(pickle.dumps(exports))
        return exports


@pytest.fixture(scope="module")
def batch_reference(reference: dict[str, bytes]) -> dict[str, bytes]:
    """The same, without the summaries (runs with --no-summaries, which most tests use to
    stay fast: the summaries stage has a test of its own)."""
    return {k: v for k, v in reference.items() if not k.startswith("export/summaries/")}


def assert_recovered_like_a_clean_run(
    data_dir: Path, inputs: list[Path], reference: dict[str, bytes], *flags: str
) -> Finished:
    rerun = enrich(["run", *flags, *map(str, inputs)], data_dir)
    assert rerun.code == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    assert snapshot(data_dir) == reference
    assert leftovers(data_dir) == []
    statuses_agree_with_exports(Lake(data_dir))
    after = health(data_dir)
    assert after["metrics"]["stranded_partitions"] == 0
    assert after["metrics"]["export_mismatches"] == 0
    return rerun


@pytest.mark.parametrize(
    "point", ["landing", "raw", "validated", "enriched", "normalized", "exports", "summaries"]
)
def test_a_kill_at_any_stage_is_recovered_by_one_plain_run(
    point: str,
    tmp_path: Path,
    inputs: list[Path],
    reference: dict[str, bytes],
    batch_reference: dict[str, bytes],
) -> None:
    data_dir = tmp_path / "data"
    flags = [] if point == "summaries" else ["--no-summaries"]
    crashed = enrich(["run", *flags, *map(str, inputs)], data_dir, ENRICH_TEST_CRASH_AT=point)
    assert crashed.code == -signal.SIGKILL

    if point not in ("landing", "summaries"):
        # Until it is recovered, nothing says that all is well.
        assert health(data_dir)["overall"] == "critical"
        with instance_of(data_dir) as instance:
            (dead,) = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))
            # The sensor ends the dead run and asks for the partition again on its backoff.
            context = build_sensor_context(instance=instance)
            now = datetime.now(UTC)
            failed_partitions_tick(context, Lake(data_dir), RetrySettings(), now=now)
            assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
            later = failed_partitions_tick(
                build_sensor_context(instance=instance, cursor=context.cursor),
                Lake(data_dir),
                RetrySettings(),
                now=now + timedelta(seconds=61),
            )
            requested = {r.partition_key for r in later.run_requests or []}
            assert dead.tags["dagster/partition"] in requested

    expected = reference if point == "summaries" else batch_reference
    assert_recovered_like_a_clean_run(data_dir, inputs, expected, *flags)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_stops_within_seconds_in_one_line_and_publishes_nothing(
    sig: signal.Signals, tmp_path: Path, inputs: list[Path], reference: dict[str, bytes]
) -> None:
    data_dir = tmp_path / "data"
    marker = tmp_path / "paused"
    process = start(
        ["run", *map(str, inputs)],
        data_dir,
        ENRICH_TEST_PAUSE_AT="enriched",
        ENRICH_TEST_PAUSE_FILE=str(marker),
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never reached enrichment"
        time.sleep(0.1)
    os.killpg(process.pid, sig)  # as Ctrl-C (or a service manager) does: the whole group
    stopped = finish(process, timeout=60)

    assert stopped.code == 128 + sig
    # Meant: within 5 s (benchmarks/bench_crash_recovery.py measures it). The bound here
    # only catches a hang on a busy test machine: before the fix it took 20 to 38 s.
    assert stopped.seconds < 20, f"took {stopped.seconds:.1f} s to stop"
    lines = stopped.stderr.strip().splitlines()
    assert len(lines) == 1, stopped.stderr
    assert lines[0].startswith(f"enrich: interrupted by {sig.name}: ")
    assert "did not complete" in lines[0]
    assert not list((data_dir / "lake" / "summaries").glob("*.parquet"))
    assert leftovers(data_dir) == []
    with instance_of(data_dir) as instance:
        runs = instance.get_runs()
        assert runs and all(r.status == DagsterRunStatus.FAILURE for r in runs)
    assert health(data_dir)["overall"] == "critical"

    assert_recovered_like_a_clean_run(data_dir, inputs, reference)


def test_a_full_disk_fails_in_one_line_and_completes_nothing_without_exports(
    tmp_path: Path, inputs: list[Path], batch_reference: dict[str, bytes]
) -> None:
    data_dir = tmp_path / "data"
    failed = enrich(
        ["run", "--no-summaries", *map(str, inputs)], data_dir, ENRICH_TEST_ENOSPC_AT="exports"
    )

    assert failed.code == 1
    assert "Traceback" not in failed.stderr
    problems = [line for line in failed.stderr.splitlines() if "No space left" in line]
    assert problems and all(line.startswith("enrich: ") for line in problems)
    lake = Lake(data_dir)
    statuses_agree_with_exports_or_none_completed(lake)

    assert_recovered_like_a_clean_run(data_dir, inputs, batch_reference, "--no-summaries")


def statuses_agree_with_exports_or_none_completed(lake: Lake) -> None:
    """No conversation is completed without its export lines (exports may exist for
    conversations the failure kept from completing)."""
    for path in sorted((lake.data_dir / "lake" / "status").glob("*.parquet")):
        statuses = read_status(lake, path.stem)
        completed = statuses.filter(statuses["status"] == "completed").height
        if completed:
            for kind in ("enriched", "training"):
                lines = lake.export_path(kind, path.stem).read_bytes().count(b"\n")
                assert completed == lines, (path.stem, kind)


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
    )
    return done.returncode == 0


def test_a_data_folder_on_a_small_tmpfs_fails_cleanly_and_recovers_once_freed(
    tmp_path: Path, inputs: list[Path], batch_reference: dict[str, bytes]
) -> None:
    mount = tmp_path / "small"
    if not _mount_tmpfs(mount, "3m"):
        pytest.skip("this machine does not let the tests mount a tmpfs (needs root)")
    try:
        data_dir = mount / "data"
        failed = enrich(["run", "--no-summaries", *map(str, inputs)], data_dir)
        assert failed.code == 1, failed.stderr
        assert "Traceback" not in failed.stderr
        assert all(line.startswith(("enrich: ", "log: ")) for line in failed.stderr.splitlines())
        statuses_agree_with_exports_or_none_completed(Lake(data_dir))
        # Space is freed: the same folder moves to a disk with room, and one run finishes.
        moved = tmp_path / "data"
        shutil.copytree(data_dir, moved, symlinks=True)
    finally:
        for _ in range(20):  # the run's worker processes may take a moment to let go
            if subprocess.run(["umount", str(mount)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            subprocess.run(["umount", "-l", str(mount)], check=False)
    rerun = enrich(["run", "--no-summaries", *map(str, inputs)], moved)
    assert rerun.code == 0, rerun.stderr
    assert snapshot(moved) == batch_reference
    assert leftovers(moved) == []


def test_commands_started_at_once_on_a_fresh_folder_all_succeed(
    tmp_path: Path, inputs: list[Path], batch_reference: dict[str, bytes]
) -> None:
    data_dir = tmp_path / "data"
    processes = [start(["run", "--no-summaries", *map(str, inputs)], data_dir) for _ in range(3)]
    results = [finish(p) for p in processes]

    for result in results:
        assert result.code == 0, result.stderr
        assert "Traceback" not in result.stderr
    assert snapshot(data_dir) == batch_reference
    assert leftovers(data_dir) == []
    statuses_agree_with_exports(Lake(data_dir))
