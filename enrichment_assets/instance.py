"""Which Dagster instance the command line records its runs in.

`DAGSTER_HOME` wins when set. Otherwise, from a folder holding `dagster.yaml`
(the project root), the command line uses the same storage that `dagster dev`
started there uses, so every run shows in the UI; elsewhere it falls back to a
local instance under `<data dir>/dagster`.

On a fresh data folder the first process to open the instance creates its SQLite
tables; two commands started at once would both try (`table runs already exists`). The
first opening is therefore done under a file lock, and retried if another kind of process
(the daemon, the UI) created the tables at the same moment.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

from enrichment_assets.lake import default_data_dir
from enrichment_assets.locks import file_lock

_CREATION_RACES = ("already exists", "UNIQUE constraint failed", "database is locked")
_ATTEMPTS = 5


def _open() -> DagsterInstance:
    if os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.get()
    cwd = Path.cwd()
    home = (default_data_dir() / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config_dir = cwd if (cwd / "dagster.yaml").exists() else home
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home), config_dir=str(config_dir)))


def _touch(instance: DagsterInstance) -> None:
    """Make every storage create its tables now (run, event log, schedule storage)."""
    instance.get_runs(limit=1)
    instance.get_dynamic_partitions("batches")
    instance.all_instigator_state()


def dagster_instance() -> DagsterInstance:
    """The instance of the embedded default (or DAGSTER_HOME's), safe to open concurrently."""
    with file_lock(default_data_dir(), "dagster instance creation", wait_s=300):
        for attempt in range(1, _ATTEMPTS + 1):
            instance = _open()
            try:
                _touch(instance)
                return instance
            except Exception as error:
                instance.dispose()
                if attempt == _ATTEMPTS or not any(r in str(error) for r in _CREATION_RACES):
                    raise
                time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")
