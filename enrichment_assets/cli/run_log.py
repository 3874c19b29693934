"""The log file of one `enrich` command: Dagster's full event log, and the Python logs.

The terminal gets one line per problem; the whole story (every event of every run the
command made, stack traces included, and what the libraries logged) goes to
`<data dir>/logs/enrich-<UTC time>-<pid>.log`, whose path the command prints. The same
events are in the Dagster instance, so the UI shows them too.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from dagster import DagsterInstance

# Log files older than this many are removed when a command starts (the newest are kept).
KEEP_LOG_FILES = 200
# While `others_write_to` runs: a descriptor of the terminal that nothing else touches
# (Dagster points `sys.stderr`'s descriptor at a log tailer during each step).
_terminal_fd: int | None = None


def terminal_fd() -> int:
    """Where a last message must go to reach the person who started the command."""
    return _terminal_fd if _terminal_fd is not None else 2


def logs_dir(data_dir: Path) -> Path:
    return data_dir / "logs"


def open_command_log(data_dir: Path, *, verbose: bool = False) -> Path:
    """Create this command's log file and send the Python logs there (and to stderr when
    `verbose`); returns its path."""
    folder = logs_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for old in sorted(folder.glob("enrich-*.log"))[:-KEEP_LOG_FILES]:
        old.unlink(missing_ok=True)
    path = folder / f"enrich-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}.log"
    handler = logging.FileHandler(path, encoding="utf-8", delay=False)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers: list[logging.Handler] = [handler]
    if verbose:
        handlers.append(logging.StreamHandler())
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    # A log file that cannot be written (a full disk) must not print tracebacks instead.
    logging.raiseExceptions = False
    # Schema bookkeeping of the instance's SQLite storage: noise for an operator.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    return path


def append_run_events(instance: DagsterInstance, run_id: str, path: Path) -> None:
    """Append every event of a run to the log file, errors with their stack traces."""
    lines = []
    for entry in instance.all_logs(run_id):
        when = datetime.fromtimestamp(entry.timestamp, UTC).isoformat(timespec="milliseconds")
        level = logging.getLevelName(entry.level) if isinstance(entry.level, int) else entry.level
        step = f" [{entry.step_key}]" if entry.step_key else ""
        event = entry.dagster_event
        kind = f" {event.event_type_value}" if event is not None else ""
        message = entry.message if event is not None else entry.user_message
        lines.append(f"{when} {level} run {run_id}{step}{kind}: {message}")
        error = entry.error_info
        if error is None and event is not None and event.event_specific_data is not None:
            error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            lines.append(error.to_string().rstrip())
    try:
        with path.open("a", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write("\n".join(lines) + "\n")
    except OSError:  # a full disk must not turn a logged failure into a traceback
        logging.getLogger(__name__).debug("could not write the run log", exc_info=True)


@contextmanager
def others_write_to(path: Path) -> Iterator[None]:
    """While the block runs, whatever writes to file descriptor 2 (child processes such as
    Dagster's log tailers, multiprocessing's resource tracker, C libraries) writes to the log
    file; this process's own `sys.stderr` (the one-line messages, the progress bar) still
    reaches the terminal. A Ctrl-C that reaches the whole process group then leaves the
    children's last words in the log, not on the screen.

    Nothing to do when `sys.stderr` is not file descriptor 2 (a test capturing it).
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd != 2:
        yield
        return
    global _terminal_fd
    sys.stderr.flush()
    original = sys.stderr
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, errors="backslashreplace")
    log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 2)
    os.close(log)
    sys.stderr = terminal
    _terminal_fd = saved
    try:
        yield
    finally:
        _terminal_fd = None
        terminal.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr = original
        terminal.close()
