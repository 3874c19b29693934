"""Advisory locks: one writer per partition, one identity registration at a time.

Two writers must never interleave on one partition's layers, statuses or exports (two
`enrich` commands, the daemon's run and a person's re-materialization from the UI). Each
writer holds the partition's lock for as long as it writes. In the embedded default the
lock is an advisory file lock (`flock`) under `<data dir>/lake/locks/`: the kernel
releases it when its holder dies, even by `kill -9`, so a crash never leaves a stale lock.
The file names the holder (pid, host, run, since), so a waiting writer can say who it
waits for. In production (`ENRICH_APP_DB_URL` set) writers may run on several machines,
and a partition's lock is a PostgreSQL session advisory lock as well (`partition_lock`):
PostgreSQL drops it when the holder's connection dies, and the holder's
`application_name` says who it is.

Locks that are taken together are taken in one order (see `identity`): a partition's
writer may take the locks of partitions landed before its own, never after, so two
writers never wait for each other.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import orjson

# How long a writer waits for a lock before it gives up with a one-line error.
DEFAULT_WAIT_S = 3600.0
# How often a waiting writer says whom it waits for.
_REPORT_EVERY_S = 30.0
_POLL_S = 0.2


_held = threading.local()


class LockTimeout(Exception):
    """A lock stayed held by another writer for longer than the caller would wait."""


def locks_dir(data_dir: Path) -> Path:
    return data_dir / "lake" / "locks"


def _lock_file(data_dir: Path, name: str) -> Path:
    # Hashed: partition keys are arbitrary strings, lock names must be safe file names.
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return locks_dir(data_dir) / f"{digest}.lock"


def _holder(handle_path: Path) -> str:
    """Who holds the lock, as its file says (one line)."""
    try:
        info = orjson.loads(handle_path.read_bytes() or b"{}")
    except (OSError, orjson.JSONDecodeError):
        return "another process"
    if not isinstance(info, dict) or not info:
        return "another process"
    run = f" run {info['run_id']}" if info.get("run_id") else ""
    return f"pid {info.get('pid')} on {info.get('host')}{run} (since {info.get('since')})"


def _acquire(
    take: Callable[[], bool],
    name: str,
    holder: Callable[[], str],
    wait_s: float,
    on_wait: Callable[[str], None] | None,
) -> None:
    """Call `take` until it gets the lock; now and then tell `on_wait` whom we wait for.

    Raises LockTimeout after `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    next_report = 0.0
    while not take():
        now = time.monotonic()
        if now >= deadline:
            raise LockTimeout(f"{name}: still locked by {holder()} after {wait_s:.0f} s")
        if on_wait is not None and now >= next_report:
            on_wait(f"waiting for {name}, held by {holder()}")
            next_report = now + _REPORT_EVERY_S
        time.sleep(_POLL_S)


@contextmanager
def file_lock(
    data_dir: Path,
    name: str,
    *,
    owner: str | None = None,
    wait_s: float = DEFAULT_WAIT_S,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the advisory lock `name` of this data folder; wait for it when it is taken.

    `on_wait(message)` is told, now and then, whom this writer waits for. Raises
    LockTimeout after `wait_s` seconds.
    """
    path = _lock_file(data_dir, name)
    held: set[Path] = _held.__dict__.setdefault("paths", set())
    if path in held:  # this thread holds it already (a step calling a helper that locks too)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def take() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        _acquire(take, name, lambda: _holder(path), wait_s, on_wait)
        info = {
            "name": name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "run_id": owner,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(info), 0)
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def partition_lock_name(partition: str) -> str:
    return f"partition {partition}"


def _describe_self(owner: str | None) -> str:
    run = f" run {owner}" if owner else ""
    return f"enrich pid {os.getpid()} on {socket.gethostname()}{run}"[:63]


def _pg_holder(conn: object, name: str) -> str:
    """Who holds the PostgreSQL advisory lock `name`: the holder's application_name."""
    row = conn.execute(  # type: ignore[attr-defined]
        "SELECT a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
        "AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = "
        "hashtextextended(%s, 0)",
        [name],
    ).fetchone()
    if row is None:
        return "another session"
    who = row[0] or f"a session from {row[1] or 'a local client'}"
    return f"{who} (since {row[2]:%Y-%m-%dT%H:%M:%S%z})"


@contextmanager
def database_lock(
    url: str,
    name: str,
    *,
    owner: str | None = None,
    wait_s: float = DEFAULT_WAIT_S,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the PostgreSQL session advisory lock `name` for the block; wait when taken.

    The connection is the lock: when the holder dies, PostgreSQL ends its session and
    the lock is free. Raises LockTimeout after `wait_s` seconds.
    """
    import psycopg

    key = f"pg {name}"
    held: set[object] = _held.__dict__.setdefault("paths", set())
    if key in held:
        yield
        return
    with psycopg.connect(url, autocommit=True, application_name=_describe_self(owner)) as conn:
        _acquire(
            lambda: conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [name]
            ).fetchone()[0],
            name,
            lambda: _pg_holder(conn, name),
            wait_s,
            on_wait,
        )
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            with suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [name])


@contextmanager
def partition_lock(
    data_dir: Path,
    partition: str,
    *,
    app_db_url: str | None = None,
    owner: str | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold partition `partition`'s writer lock: the file lock, and with an application
    database the PostgreSQL advisory lock too (writers on other machines)."""
    name = partition_lock_name(partition)
    with file_lock(data_dir, name, owner=owner, on_wait=on_wait):
        if app_db_url is None:
            yield
            return
        with database_lock(app_db_url, name, owner=owner, on_wait=on_wait):
            yield


IDENTITY_LOCK = "identity index"


# -- claims: the partitions a running command is about to run ---------------------------------


def claims_dir(data_dir: Path) -> Path:
    return data_dir / "lake" / "claims"


@contextmanager
def claim(data_dir: Path, partitions: list[str], owner: str | None = None) -> Iterator[None]:
    """Say, for as long as the block runs, that this process will run these partitions.

    `enrich run` registers its partitions, then runs them one after the other; until it
    gets to one, nobody else should start it. The claim is a file listing them, locked by
    this process: when the process dies the kernel drops the lock, and the claim is void
    (`claimed_partitions` then removes it).
    """
    folder = claims_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
    # Locked under a name readers ignore, then renamed: a reader never sees it unlocked.
    staging, path = folder / f".{name}.claiming", folder / f"{name}.json"
    fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, orjson.dumps({"owner": owner, "pid": os.getpid(), "partitions": partitions}))
        os.replace(staging, path)
        yield
    finally:
        staging.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        os.close(fd)


def claimed_partitions(data_dir: Path) -> set[str]:
    """The partitions that live commands have claimed; void claims are removed."""
    claimed: set[str] = set()
    folder = claims_dir(data_dir)
    if not folder.exists():
        return claimed
    for path in folder.glob("*.json"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # its owner holds it: the claim stands
                with suppress(OSError, orjson.JSONDecodeError, AttributeError):
                    claimed.update(orjson.loads(path.read_bytes()).get("partitions", []))
                continue
            path.unlink(missing_ok=True)  # nobody holds it: its command is gone
        finally:
            os.close(fd)
    return claimed
