"""Helpers for tests that start a process group (the daemon, `dagster dev`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group (daemon or webserver, code servers, run workers), then SIGKILL
    leftovers."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; its children may still be shutting down in the group.
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
