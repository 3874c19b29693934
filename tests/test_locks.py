"""Partition locks across machines: a PostgreSQL advisory lock when the application
database is configured. Two processes with different data folders stand for two pods
(no shared file lock); the holder is killed with SIGKILL and the lock comes free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from enrichment_assets.locks import LockTimeout, database_lock, partition_lock, partition_lock_name
from tests.postgres import requires_postgres

HOLDER = """
import sys, time
from pathlib import Path
from enrichment_assets.locks import partition_lock
with partition_lock(Path(sys.argv[1]), "batch-7", app_db_url=sys.argv[2], owner="run-a"):
    Path(sys.argv[3]).write_text("held")
    time.sleep(300)
"""


def _start_holder(data_dir: Path, url: str, flag: Path) -> subprocess.Popen[bytes]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir), url, str(flag)])
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert holder.poll() is None, "the holder process died before taking the lock"
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.1)
    return holder


@requires_postgres
def test_a_writer_on_another_machine_waits_names_the_holder_and_gets_the_lock_after_a_kill(
    tmp_path: Path, new_database: Callable[[str], str]
) -> None:
    url = new_database("locks")
    holder = _start_holder(tmp_path / "pod-a", url, tmp_path / "held")
    try:
        waits: list[str] = []
        with (
            pytest.raises(LockTimeout) as refused,
            database_lock(url, partition_lock_name("batch-7"), wait_s=1.0, on_wait=waits.append),
        ):
            pass
        assert f"enrich pid {holder.pid}" in str(refused.value)
        assert "run run-a" in str(refused.value)
        assert waits and f"pid {holder.pid}" in waits[0]
        # Another partition is free meanwhile.
        with database_lock(url, partition_lock_name("batch-8"), wait_s=1.0):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # The holder's session ends with it: the second pod takes the lock by itself.
    started = time.monotonic()
    with partition_lock(tmp_path / "pod-b", "batch-7", app_db_url=url, owner="run-b"):
        assert time.monotonic() - started < 60


@requires_postgres
def test_the_lock_is_reentrant_within_one_writer(
    tmp_path: Path, new_database: Callable[[str], str]
) -> None:
    url = new_database("locks")
    with (
        partition_lock(tmp_path, "batch-1", app_db_url=url),
        partition_lock(tmp_path, "batch-1", app_db_url=url),
    ):
        pass
    with database_lock(url, partition_lock_name("batch-1"), wait_s=1.0):
        pass
