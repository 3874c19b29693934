"""The executor of every job of the code location, the UI's asset runs and backfills too.

A run executes its steps one after the other in its own process, as `enrich run` does: a
batch's four layers are sequential, and each parallelizes inside its step (the worker
processes of `workers.py`), so a process per step would only pay the start-up (the stack's
imports, the definitions) again for each step. The run config keeps Dagster's choice
(`execution: config: multiprocess: {}` still gives a process per step); without one, a
run is in-process.
"""

from __future__ import annotations

from typing import Any

from dagster import Definitions, Field, Permissive, multi_or_in_process_executor


def _in_process_unless_told(config: dict[str, Any]) -> dict[str, Any]:
    return config if config else {"in_process": {}}


in_process_by_default = multi_or_in_process_executor.configured(
    _in_process_unless_told,
    name="in_process_by_default",
    config_schema={
        "in_process": Field(Permissive(), is_required=False),
        "multiprocess": Field(Permissive(), is_required=False),
    },
)

defs = Definitions(executor=in_process_by_default)
