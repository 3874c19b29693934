"""SIGINT and SIGTERM for a long command: stop within seconds, say what did not complete.

The command's work runs in a thread; the main thread only waits for it and receives the
signals. On the first SIGINT or SIGTERM it calls `on_interrupt`, which records the end of
the runs in flight (failed, so that they are retried), removes this process's temporary
files and prints one line, then ends the process with 128 + the signal number (130, 143).
Nothing the work would have done afterwards (the daily summaries of partial data) happens:
the process is gone. Every write of the pipeline is a rename of a finished file, so what
was written before stays whole, and what was not is redone by the next run.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

from enrichment_assets.cli.run_log import terminal_fd

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How long the interrupt's bookkeeping may take before the process ends anyway.
BOOKKEEPING_S = 3.5


def run_interruptibly(work: Callable[[], T], on_interrupt: Callable[[int], str]) -> T:
    """`work()` in a thread; on SIGINT/SIGTERM, `on_interrupt(signum)` returns the line to
    print (it may take up to BOOKKEEPING_S), and the process exits 128 + signum."""
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _: received.append(signum)) for sig in SIGNALS
    }
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the main thread as is
            outcome["error"] = error

    thread = threading.Thread(target=target, name="enrich-command", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
            if received:
                _stop(received[0], on_interrupt)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _stop(signum: int, on_interrupt: Callable[[int], str]) -> None:
    line: list[str] = []

    def bookkeeping() -> None:
        line.append(on_interrupt(signum))

    helper = threading.Thread(target=bookkeeping, name="interrupt", daemon=True)
    helper.start()
    helper.join(BOOKKEEPING_S)
    name = signal.Signals(signum).name
    message = line[0] if line else "interrupted before it could say what did not complete"
    text = f"enrich: interrupted by {name}: {message}\n".encode(errors="backslashreplace")
    # Straight to the terminal's own descriptor: `sys.stderr` may be captured by a step.
    with suppress(OSError):
        sys.stdout.flush()
    with suppress(OSError):
        os.write(terminal_fd(), text)
    os._exit(128 + signum)
