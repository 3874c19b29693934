"""Leftovers of runs that died: temporary files and scratch folders, found and removed.

Every temporary file the pipeline writes is hidden beside its target and named after
the host and pid of its writer (`lake.hidden_temp`); every scratch folder of the worker
processes too (`workers.scratch_dir`). A process that ends normally removes its own; one
killed outright cannot. Each command start calls `clean_leftovers`, which removes those
whose writer no longer runs on this host (a file of another host sharing the folder is
left alone, since its writer's pid means nothing here). Older leftovers that carry no pid
(DuckDB's `tmp_` copies, the names of earlier releases) are removed once they are an hour old.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from enrichment_assets.lake import HOST_TAG
from enrichment_assets.locks import claimed_partitions

_TEMP_FILE = re.compile(r"^\.[0-9a-f]{10}\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-.*\.tmp$")
_SCRATCH_DIR = re.compile(r"^enrich-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-")
# Temporary names without a writer pid: removed when older than this.
_ANONYMOUS_MAX_AGE_S = 3600.0
_ANONYMOUS = re.compile(r"^(tmp_.*|\..*\.tmp)$")
SHARED_MEMORY = Path("/dev/shm")
_OWN_FOLDERS = ("lake", "export", "reports", "cache", "logs")


def pid_alive(pid: int) -> bool:
    """True when a process with this pid runs on this host (or cannot be signalled).

    A zombie (killed, not yet reaped by its parent) runs no more: it writes nothing."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (not Linux), or it has just been reaped
        return False
    # `pid (comm) state ...`: comm may hold spaces and parentheses, the state follows the last ')'.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] == "Z"


def _orphaned(name: str, pattern: re.Pattern[str]) -> bool:
    match = pattern.match(name)
    if match is None or match["host"] != HOST_TAG:
        return False
    pid = int(match["pid"])
    return pid != os.getpid() and not pid_alive(pid)


def _walk(folder: Path) -> Iterable[Path]:
    """Every file under `folder`, hidden ones included (not following links)."""
    for root, _, files in os.walk(folder):
        for name in files:
            yield Path(root) / name


def clean_leftovers(data_dir: Path, scratch_roots: Iterable[Path] | None = None) -> list[Path]:
    """Remove the temporary files and scratch folders of dead writers; returns them."""
    removed: list[Path] = []
    now = time.time()
    # Only the folders the pipeline writes: the landing folder belongs to the people who
    # drop files there (a `.x.tmp` there is someone's upload in progress).
    for path in (p for folder in _OWN_FOLDERS for p in _walk(data_dir / folder)):
        name = path.name
        stale = _orphaned(name, _TEMP_FILE)
        if not stale and _TEMP_FILE.match(name) is None and _ANONYMOUS.match(name):
            try:
                stale = now - path.lstat().st_mtime > _ANONYMOUS_MAX_AGE_S
            except OSError:
                continue
        if stale:
            path.unlink(missing_ok=True)
            removed.append(path)
    claimed_partitions(data_dir)  # drops the claims of commands that are gone
    roots = (
        scratch_roots if scratch_roots is not None else (SHARED_MEMORY, Path(tempfile.gettempdir()))
    )
    for root in roots:
        try:
            entries = list(root.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir() and _orphaned(entry.name, _SCRATCH_DIR):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def remove_own_leftovers(data_dir: Path, scratch_roots: Iterable[Path] | None = None) -> None:
    """Remove this process's temporary files, scratch folders and claims, before it exits
    on an interrupt (a normal end removes each as it goes)."""
    pid = os.getpid()

    def mine(name: str, pattern: re.Pattern[str]) -> bool:
        match = pattern.match(name)
        return match is not None and match["host"] == HOST_TAG and int(match["pid"]) == pid

    for path in (p for folder in _OWN_FOLDERS for p in _walk(data_dir / folder)):
        if mine(path.name, _TEMP_FILE):
            path.unlink(missing_ok=True)
    roots = (
        scratch_roots if scratch_roots is not None else (SHARED_MEMORY, Path(tempfile.gettempdir()))
    )
    for root in roots:
        for entry in root.glob(f"enrich-{HOST_TAG}-{pid}-*"):
            shutil.rmtree(entry, ignore_errors=True)
    claims = data_dir / "lake" / "claims"
    if claims.exists():
        for path in claims.glob(f"*-{pid}-*.json"):
            path.unlink(missing_ok=True)
