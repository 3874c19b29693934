"""Test-only fault points: where the crash suite kills a run or fills the disk.

`ENRICH_TEST_CRASH_AT=<point>` makes the process kill itself (SIGKILL, as an out-of-memory
killer or `kill -9` would) when it reaches that point; `ENRICH_TEST_ENOSPC_AT=<point>` makes
it fail there as a full disk does. Unset (always, outside tests) they cost one dictionary
lookup. The points: `landing` (bytes copied, manifest not written), `raw`, `validated`,
`enriched` (mid-enrichment: the first chunk annotated), `normalized` (layer written, exports
not), `exports` (one export file written), `summaries` (a day's Parquet written), `dataset`
(the training dataset staged and gated, nothing published).
`ENRICH_TEST_PAUSE_AT=<point>` waits there instead, after writing the point's name and the pid
to the file `ENRICH_TEST_PAUSE_FILE`, so that a test can send a signal at a known moment (once:
when the file exists already, the point is passed).
"""

from __future__ import annotations

import errno
import os
import signal
import time

from enrichment_assets import settings as env_settings

CRASH_ENV = "ENRICH_TEST_CRASH_AT"
ENOSPC_ENV = "ENRICH_TEST_ENOSPC_AT"
# Pause at a point (for a test to send a signal there): touch this file, then wait.
PAUSE_ENV = "ENRICH_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "ENRICH_TEST_PAUSE_FILE"
PAUSE_S = 120.0


def fault_point(name: str) -> None:
    """Crash or fail here if a test asked for it (see the module docstring)."""
    if env_settings.raw(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if env_settings.raw(ENOSPC_ENV) == name:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"<{name}>")
    if env_settings.raw(PAUSE_ENV) == name:
        # Once: the run that retries the interrupted one goes through.
        marker = env_settings.raw(PAUSE_FILE_ENV)
        if marker and os.path.exists(marker):
            return
        if marker:
            with open(marker, "a") as handle:
                handle.write(f"{name} {os.getpid()}\n")
        time.sleep(PAUSE_S)
