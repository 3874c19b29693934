"""Worker processes: tasks in order, tables through shared memory, the same layers as in-process."""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from dagster import DagsterInstance

from enrichment_assets import workers
from enrichment_assets.cli.runner import land_files, materialize_partitions
from enrichment_assets.ingest import raw_records
from enrichment_assets.lake import Lake
from enrichment_assets.sample_data import write_sample_files
from enrichment_assets.workers import SharedTable, map_ordered, scratch_dir, scratch_root


def test_tasks_run_in_other_processes_and_come_back_in_order() -> None:
    assert list(map_ordered(pow, [(i, 2) for i in range(40)], workers=2)) == [
        i * i for i in range(40)
    ]
    pids = set(map_ordered(os.getpid, [() for _ in range(8)], workers=2))
    assert os.getpid() not in pids


def test_read_ahead_keeps_order_and_produces_in_one_other_thread() -> None:
    import threading

    threads: list[int] = []

    def produce():
        for i in range(20):
            threads.append(threading.get_ident())
            yield i

    assert list(workers.read_ahead(produce())) == list(range(20))
    assert len(set(threads)) == 1 and threads[0] != threading.get_ident()


def test_read_ahead_closes_its_source_in_its_thread_when_the_caller_stops() -> None:
    import threading

    events: list[tuple[str, int]] = []

    def produce():
        try:
            for i in range(1_000):
                events.append(("made", i))
                yield i
        finally:
            events.append(("closed", threading.get_ident()))

    items = workers.read_ahead(produce())
    assert [next(items), next(items)] == [0, 1]
    items.close()
    made = [i for what, i in events if what == "made"]
    assert made == [0, 1, 2]  # one item ahead of the caller, no more
    assert events[-1][0] == "closed" and events[-1][1] != threading.get_ident()


def test_read_ahead_raises_the_sources_error_to_the_caller() -> None:
    def produce():
        yield 1
        raise ValueError("bad chunk")

    items = workers.read_ahead(produce())
    assert next(items) == 1
    with pytest.raises(ValueError, match="bad chunk"):
        next(items)


def _child_processes() -> set[int]:
    tasks = Path(f"/proc/{os.getpid()}/task")
    return {int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()}


@pytest.fixture
def new_children() -> Callable[[], set[int]]:
    """The child processes of this test process started since the test began: another
    test's long-lived helper (a browser, a loopback server) in the same xdist worker is
    not this test's leftover."""
    before = _child_processes()
    return lambda: _child_processes() - before


def test_workers_parse_without_numpy_and_the_pool_leaves_no_process(
    tmp_path: Path, new_children: Callable[[], set[int]]
) -> None:
    """pyarrow works in a worker with numpy hidden (14 MiB less each); once the tasks are
    done no process of the pool is left, the resource tracker included (12 MiB)."""
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"{x}\n" * 10)
    ranges = raw_records.json_lines_ranges(path, max_rows=5)
    assert ranges is not None and len(ranges) == 2
    with scratch_dir(2) as scratch:
        tasks = [(raw_records.read_line_range, scratch, str(path), "l.jsonl", r) for r in ranges]
        tables = [workers.loaded(t) for t in map_ordered(workers.shared_call, tasks, workers=2)]
        assert [t.num_rows for t in tables] == [5, 5]
    with pytest.raises(ModuleNotFoundError, match="numpy is not used in worker processes"):
        list(map_ordered(importlib.util.find_spec, [("numpy",), ("pandas",)], workers=2))
    assert new_children() == set()


def test_kept_pools_serve_every_call_with_the_same_workers_then_leave_no_process(
    new_children: Callable[[], set[int]],
) -> None:
    tasks = [() for _ in range(8)]
    with workers.kept_pools():
        first = set(map_ordered(os.getpid, tasks, workers=2))
        assert new_children()  # kept up between the calls
        with workers.kept_pools():  # nested: the outer block decides
            second = set(map_ordered(os.getpid, tasks, workers=2))
        third = set(map_ordered(os.getpid, tasks, workers=2))
        assert new_children()
    # Two workers served all three calls (a new pool would have brought new pids).
    assert len(first | second | third) <= 2 and os.getpid() not in first
    assert new_children() == set()
    # Without the block, each call has a pool of its own again.
    assert set(map_ordered(os.getpid, tasks, workers=2)).isdisjoint(first)
    assert new_children() == set()


def test_a_small_file_is_not_worth_a_worker_process() -> None:
    """One worker per MIN_BYTES_PER_WORKER of input: a 4 MB file is parsed in the run's
    process (two workers cost about 230 MiB of imports), a big one by every worker."""
    assert workers.workers_for_bytes(4_000_000, 2) == 1
    assert workers.workers_for_bytes(0, 2) == 1
    assert workers.workers_for_bytes(2 * workers.MIN_BYTES_PER_WORKER, 2) == 2
    assert workers.workers_for_bytes(100 * workers.MIN_BYTES_PER_WORKER, 2) == 2


def test_one_worker_runs_the_tasks_here() -> None:
    assert set(map_ordered(os.getpid, [(), ()], workers=1)) == {os.getpid()}


def test_a_task_error_is_raised_to_the_caller() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        list(map_ordered(int, [("12",), ("twelve",), ("13",)], workers=2))
    # The pool survives a task's error.
    assert list(map_ordered(int, [("14",)], workers=2)) == [14]


def test_shared_table_round_trips_and_leaves_no_file() -> None:
    table = pa.table({"id": [1, 2, 3], "text": ["a", "é", None]})
    with scratch_dir(2) as scratch:
        assert scratch is not None
        shared = SharedTable.save(table, Path(scratch))
        assert shared.path.exists()
        assert shared.load().equals(table)
        assert not shared.path.exists()
    assert not Path(scratch).exists()


def test_no_scratch_folder_for_a_single_worker() -> None:
    with scratch_dir(1) as scratch:
        assert scratch is None


def test_scratch_falls_back_to_temp_without_shared_memory(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(workers, "SHARED_MEMORY", tmp_path / "no-shm")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(workers.tempfile, "tempdir", None)
    assert scratch_root() == tmp_path


def test_bad_worker_count_is_a_one_line_error(monkeypatch) -> None:
    monkeypatch.setenv("ENRICH_WORKERS", "many")
    with pytest.raises(ValueError, match="ENRICH_WORKERS='many': expected a whole number"):
        workers.default_workers()


def _run(
    data_dir: Path, inputs: list[Path], instance: DagsterInstance, monkeypatch, count: int
) -> tuple[Lake, list[str]]:
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ENRICH_WORKERS", str(count))
    lake = Lake(data_dir)
    keys = land_files(lake, instance, inputs)
    assert all(o.success for o in materialize_partitions(instance, keys)), keys
    return lake, keys


def test_worker_processes_write_exactly_what_one_process_writes(
    tmp_path: Path, instance: DagsterInstance, monkeypatch
) -> None:
    """JSON Lines in many byte ranges, an array file, defects, mojibake: same layers, same bytes."""
    monkeypatch.setattr(raw_records, "RANGE_BYTES", 64 << 10)
    inputs = write_sample_files(
        tmp_path / "in", 1_500, files=2, seed=5, defect_rate=0.05, formats=("jsonl", "json_array")
    )
    ranges = raw_records.json_lines_ranges(inputs[0])
    assert ranges is not None and len(ranges) > 5  # the JSON Lines file is cut in many ranges
    assert raw_records.json_lines_ranges(inputs[1]) is None  # the array file is read whole
    alone, partitions = _run(tmp_path / "one", inputs, instance, monkeypatch, 1)
    pooled, same_partitions = _run(tmp_path / "two", inputs, instance, monkeypatch, 2)
    assert partitions == same_partitions
    for partition in partitions:
        for kind in ("enriched", "training", "quarantine"):
            expected = alone.export_path(kind, partition).read_bytes()
            assert pooled.export_path(kind, partition).read_bytes() == expected, kind
        for layer in ("raw", "validated", "quarantine", "enriched", "normalized"):
            one = pl.read_parquet(alone.layer_path(layer, partition))
            two = pl.read_parquet(pooled.layer_path(layer, partition))
            volatile = ["ingested_at"] if layer == "raw" else []
            assert one.drop(volatile).equals(two.drop(volatile)), (partition, layer)
        assert pl.read_parquet(alone.layer_path("raw", partition)).height == 750


def _use_the_pool_in_a_child() -> None:
    assert list(map_ordered(pow, [(2, 2), (3, 2)], workers=2)) == [4, 9]


def test_a_step_process_that_used_the_pool_ends() -> None:
    """Dagster runs each step in a multiprocessing child: its pool must not keep it alive."""
    child = multiprocessing.get_context("spawn").Process(target=_use_the_pool_in_a_child)
    child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the child was still waiting for its worker processes after 60 s"
    assert child.exitcode == 0


def _start_the_pool_and_wait(pids: multiprocessing.Queue) -> None:
    for pid in set(map_ordered(os.getpid, [() for _ in range(6)], workers=2)):
        pids.put(pid)
    time.sleep(600)


def _ended(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has ended; only its exit status is left


def test_workers_end_when_their_parent_is_killed() -> None:
    """A step process killed outright (SIGKILL, out of memory) leaves no worker behind."""
    context = multiprocessing.get_context("spawn")
    pids: multiprocessing.Queue = context.Queue()
    child = context.Process(target=_start_the_pool_and_wait, args=(pids,))
    child.start()
    workers = {pids.get(timeout=60)}
    deadline = time.monotonic() + 10
    while len(workers) < 2 and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            workers.add(pids.get(timeout=1))
    assert workers and child.pid not in workers
    child.kill()
    child.join()
    deadline = time.monotonic() + 30
    while not all(_ended(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(_ended(pid) for pid in workers), workers


def test_a_spawned_worker_does_not_load_the_command_line() -> None:
    """multiprocessing's spawn re-imports the `enrich` console script in every worker, and
    so `enrichment_assets.cli`: the package must not bring typer and rich with it."""
    probe = (
        "import sys, enrichment_assets.cli as cli; "
        "print(sorted(m for m in ('typer', 'rich', 'dagster') if m in sys.modules)); "
        "print(callable(cli.console_main), cli.app.info.name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert out[0] == "[]"  # nothing heavy on import
    assert out[1] == "True enrich"  # and the commands still there on first use
