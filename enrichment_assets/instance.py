"""Which Dagster instance the command line records its runs in.

`DAGSTER_HOME` wins when set. Otherwise, from a folder holding `dagster.yaml`
(the project root), the command line uses the same storage that `dagster dev`
started there uses, so every run shows in the UI; elsewhere it falls back to a
local instance under `<data dir>/dagster`.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

from enrichment_assets.lake import default_data_dir


def dagster_instance() -> DagsterInstance:
    if os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.get()
    cwd = Path.cwd()
    home = (default_data_dir() / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config_dir = cwd if (cwd / "dagster.yaml").exists() else home
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home), config_dir=str(config_dir)))
