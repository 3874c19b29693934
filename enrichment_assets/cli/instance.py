"""Which Dagster instance the command line records its runs in.

`DAGSTER_HOME` wins when set. Otherwise the instance is the embedded default, and it lives
in the data folder: `<ENRICH_DATA_DIR>/dagster`. Its settings are the project's
`dagster.yaml` (package data in the wheel), whose storage paths name `ENRICH_DAGSTER_DIR`;
this module sets that variable to the data folder's `dagster/` before opening it. `dagster
dev` (and `dg dev`, and the daemon it starts) read the same `dagster.yaml` from the project
folder and the variable from the project's `.env` (`${ENRICH_DATA_DIR:-data}/dagster`), so
the UI and the command line share one instance per data folder, and two data folders never
share runs or partitions.

On a fresh data folder the first process to open the instance creates its SQLite
tables; two commands started at once would both try (`table runs already exists`). The
first opening is therefore done under a file lock, and retried if another kind of process
(the daemon, the UI) created the tables at the same moment.
"""

from __future__ import annotations

import time
from pathlib import Path

from dagster import DagsterInstance

from enrichment_assets import settings as env_settings
from enrichment_assets.lake import default_data_dir
from enrichment_assets.locks import file_lock
from enrichment_assets.package_data import package_data_path

# The variable the embedded default's `dagster.yaml` takes its storage folder from.
INSTANCE_DIR_VARIABLE = "ENRICH_DAGSTER_DIR"
_CREATION_RACES = ("already exists", "UNIQUE constraint failed", "database is locked")
_ATTEMPTS = 5


def embedded_instance_dir(data_dir: Path) -> Path:
    """Where the embedded default keeps the Dagster instance of a data folder."""
    return (data_dir / "dagster").resolve()


def _open() -> DagsterInstance:
    if env_settings.raw("DAGSTER_HOME"):
        return DagsterInstance.get()
    home = embedded_instance_dir(default_data_dir())
    home.mkdir(parents=True, exist_ok=True)
    env_settings.use_instance_dir(str(home))
    return DagsterInstance.from_config(str(package_data_path("dagster.yaml").parent))


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
