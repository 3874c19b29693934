"""Worker processes for the Python-bound work of a layer: parsing, validation, text repair.

Threads cannot share that work (orjson, pydantic and ftfy hold the GIL), so a layer
hands its chunks to a small process pool. A task reads its own input (a row group of
a layer file, a byte range of a landed file), so no input travels through a pipe, and
writes its tables as Arrow IPC files into a scratch folder in shared memory, which the
run's process maps without a copy. Results come back in task order, with a bounded
number of tasks in flight, so memory stays bounded by the chunk size.

The pool lives for one `map_ordered` call: it starts when a layer has more than one
task and stops when the layer's tasks are done, so that no idle worker (each holds
its imports, about 100 MB) sits beside the quality gate or a small run; a command
running several layers and partitions keeps it up between them (`kept_pools`). A worker
imports only what its tasks need (unpickling a task imports its module).

With one worker (`ENRICH_WORKERS=1`, or a single CPU) every task runs in the calling
process, exactly as the pool would run it.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import importlib.abc
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from enrichment_assets import settings as env_settings
from enrichment_assets.lake import HOST_TAG

if TYPE_CHECKING:
    # Imported where used: a worker imports this module (its initializer) before it
    # hides numpy, and pyarrow would import numpy with itself (see `_start_worker`).
    import pyarrow as pa

WORKERS_ENV = "ENRICH_WORKERS"
# Shared memory when the machine has room there; otherwise the system's temp folder.
SHARED_MEMORY = Path("/dev/shm")
MIN_SHARED_MEMORY_BYTES = 1 << 30

T = TypeVar("T")


def default_workers() -> int:
    """ENRICH_WORKERS, or one per CPU this process may run on."""
    return env_settings.whole_number(WORKERS_ENV, len(os.sched_getaffinity(0)))


# A worker process costs about 100 MiB (its imports) whatever its work: an input
# smaller than this per worker is parsed by fewer (one: in the calling process).
MIN_BYTES_PER_WORKER = 16 << 20


def workers_for_bytes(size: int, workers: int) -> int:
    """How many of `workers` an input of `size` bytes is worth: one per
    MIN_BYTES_PER_WORKER, at least one. A 4 MB file of a million one-line records is
    parsed in the run's process: about 230 MiB less peak than two workers, for the
    second core's share of its parsing (about 16 s of CPU for the million lines)."""
    return max(1, min(workers, size // MIN_BYTES_PER_WORKER))


_pools: dict[int, ProcessPoolExecutor] = {}


# Installed in the run's process (GX needs pandas), used by no task: see `_start_worker`.
HIDDEN_IN_WORKERS = ("pandas", "numpy")


class _Hidden(importlib.abc.MetaPathFinder):
    """An import hook under which these packages cannot be imported (see `_start_worker`)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{name} is not used in worker processes", name=name)


def _start_worker() -> None:
    """A worker's first steps: hide pandas and numpy from pyarrow, end with its parent.

    No task converts to or from pandas or numpy, but pyarrow imports numpy with itself
    when it is installed (14 MiB in every worker), and its `pa.array(list)` asks whether
    the list is a pandas object, which imports pandas (60 MB). An import hook makes
    those imports fail fast: pyarrow then takes both as absent, in the workers only
    (this module does not import pyarrow itself, so that the hook comes first).

    A worker ignores SIGINT: Ctrl-C reaches the whole process group, and it is the run's
    process that decides how to stop (a worker ends when its parent does).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.meta_path.insert(0, _Hidden(HIDDEN_IN_WORKERS))
    parent = multiprocessing.parent_process()
    if parent is not None:
        # A parent killed outright (SIGKILL, out of memory) runs no shutdown; without
        # this the workers would wait for tasks forever.
        threading.Thread(
            target=_exit_with_parent, args=(parent.sentinel,), name="parent-watch", daemon=True
        ).start()


def _exit_with_parent(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _libc_malloc_trim()


def release_memory() -> None:
    """Give the memory this process freed back to the system (Arrow's pool, then the C
    heap), so that it does not sit on the peak of its last big step."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if _malloc_trim is not None:
        _malloc_trim(0)


def _run_task(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """One task in a worker; then the memory it freed goes back to the system, so
    that an idle worker does not sit on the peak of its last task."""
    try:
        return fn(*args)
    finally:
        release_memory()


def _pool(workers: int) -> ProcessPoolExecutor:
    """One pool per size and process, started on first use (spawned: a fork of a process
    running Polars, DuckDB or Dagster threads could inherit a held lock)."""
    pool = _pools.get(workers)
    if pool is None:
        pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker
        )
        _pools[workers] = pool
        # This process may itself be a multiprocessing child (Dagster runs each step in
        # one). Such a child joins its child processes as it ends, before any atexit
        # handler: the pool must be shut down first, or the step never exits.
        multiprocessing.util.Finalize(pool, pool.shutdown, exitpriority=100)
    return pool


def _stop_pool(workers: int) -> None:
    pool = _pools.pop(workers, None)
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
        del pool
        _stop_resource_tracker()


def _stop_resource_tracker() -> None:
    """Stop multiprocessing's resource tracker, which starting the pool started.

    It is a Python process of its own (12 MiB) that tracks the pool's semaphores and
    would otherwise live as long as the run's process, through the quality gate that
    follows the layer. The pool's queues are collected first, so that their semaphores
    are unregistered (and an unregistration does not start a new tracker); the next
    pool starts a new one. `_stop` is the standard library's own (3.8+), used by its
    tests; without it the tracker simply stays, as it does when it is a parent's (this
    process a multiprocessing child: the tracker is shared, not ours to stop).
    """
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    if getattr(tracker, "_pid", None) is None or not hasattr(tracker, "_stop"):
        return
    gc.collect()
    tracker._stop()


@atexit.register
def shutdown_pools() -> None:
    while _pools:
        _, pool = _pools.popitem()
        pool.shutdown(wait=True, cancel_futures=True)


def map_ordered(
    fn: Callable[..., T], tasks: Iterable[tuple[Any, ...]], workers: int
) -> Iterator[T]:
    """`fn(*task)` for each task, in task order, over `workers` processes.

    `fn` must be importable (a module-level function of a module that does not import
    Dagster, so workers start fast) and its arguments and result picklable. At most
    twice `workers` tasks are in flight. A task's exception is raised here. A single
    task (a small batch) runs here: starting processes would cost more than it saves.
    The pool stops when the tasks are done (or the caller stops asking), unless a
    `kept_pools` block keeps it for the next call.
    """
    tasks = list(tasks)
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield fn(*task)
        return
    pool = _pool(workers)
    pending: deque[Future[T]] = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(_run_task, fn, task))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        # A worker died (killed, out of memory): the next call starts a fresh pool.
        _pools.pop(workers, None)
        raise
    finally:
        for future in pending:
            future.cancel()
        if not _kept:
            _stop_pool(workers)


# Open `kept_pools` blocks: while any is, a pool outlives its `map_ordered` call.
_kept: list[object] = []


@contextmanager
def kept_pools() -> Iterator[None]:
    """Within the block, a pool started by `map_ordered` stays up for the next call, and
    stops when the block ends.

    For a command running several layers and partitions one after the other: starting
    two workers and their imports costs about 2 s, paid once instead of once per layer
    and partition. Between the calls the idle workers hold their imports (about 100 MiB
    each) beside the quality gates; a command that never needs a pool (a small or a
    messy input parsed here) starts none.
    """
    token = object()
    _kept.append(token)
    try:
        yield
    finally:
        _kept.remove(token)
        if not _kept:
            for workers in list(_pools):
                _stop_pool(workers)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cycle collector around allocation-heavy work that makes no cycles.

    Parsing and validating a chunk allocates millions of dicts and strings; each
    allocation burst triggers collections that walk every live object again (about a
    fifth of the validation time). Reference counting still frees everything here.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def scratch_root() -> Path:
    """Where tasks leave their result tables: shared memory if it has room, else temp."""
    try:
        if os.access(SHARED_MEMORY, os.W_OK) and (
            shutil.disk_usage(SHARED_MEMORY).free >= MIN_SHARED_MEMORY_BYTES
        ):
            return SHARED_MEMORY
    except OSError:
        pass
    return Path(tempfile.gettempdir())


@contextmanager
def scratch_dir(workers: int) -> Iterator[str | None]:
    """A private folder for one layer's task results, removed afterwards.

    None when the tasks run in the calling process (they return their tables as is).
    """
    if workers <= 1:
        yield None
        return
    # Named after this process, so that `debris.clean_leftovers` can tell a dead run's.
    path = Path(tempfile.mkdtemp(prefix=f"enrich-{HOST_TAG}-{os.getpid()}-", dir=scratch_root()))
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class SharedTable:
    """An Arrow table left in a scratch file by a task; `load` maps it without copying."""

    path: Path

    @classmethod
    def save(cls, table: pa.Table, scratch: Path) -> SharedTable:
        import pyarrow as pa

        path = scratch / f"{uuid.uuid4().hex}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return cls(path)

    def load(self) -> pa.Table:
        """The table, memory-mapped; the file is unlinked (the mapping stays valid)."""
        import pyarrow as pa

        with pa.memory_map(str(self.path)) as source:
            table = pa.ipc.open_file(source).read_all()
        self.path.unlink()
        return table


def share(table: pa.Table, scratch: str | None) -> pa.Table | SharedTable:
    """Leave `table` in `scratch` for the run's process; without one, the table itself."""
    return table if scratch is None else SharedTable.save(table, Path(scratch))


def loaded(table: pa.Table | SharedTable) -> pa.Table:
    """The table a task returned, mapped from its scratch file when it left one."""
    return table.load() if isinstance(table, SharedTable) else table


def shared_call(
    fn: Callable[..., pa.Table], scratch: str | None, *args: Any
) -> pa.Table | SharedTable:
    """`fn(*args)`, its table left in `scratch` (a task for `map_ordered`; see `loaded`)."""
    return share(fn(*args), scratch)


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items` in order, each one produced in a thread while the caller works on the one
    before: for a producer that mostly releases the GIL (a DuckDB query, an Arrow
    conversion) beside a consumer that holds it (GX). At most one item waits ahead.

    Every step of `items` runs in that one thread (a DuckDB connection stays in the
    thread that opened it), its closing too, when the caller stops early or fails.
    """
    end = object()
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        pending: Future[Any] = pool.submit(next, items, end)
        try:
            while (item := pending.result()) is not end:
                pending = pool.submit(next, items, end)
                yield item
                del item
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                pool.submit(close).result()


def map_ordered_threads(
    fn: Callable[[T], Any], items: Iterable[T], threads: int
) -> Iterator[tuple[T, Any]]:
    """(item, fn(item)) for each item, in order, `threads` at a time in this process.

    For work that releases the GIL (DuckDB, Polars); at most `threads` items in flight.
    """
    if threads <= 1:
        for item in items:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="chunk") as pool:
        pending: deque[tuple[T, Future[Any]]] = deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= threads:
                done, result = pending.popleft()
                yield done, result.result()
        while pending:
            done, result = pending.popleft()
            yield done, result.result()
