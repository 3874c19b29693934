"""The retry state of unhealthy partitions, kept in the Dagster instance.

One JSON value in the instance's key-value storage (`RETRIES_KEY`), beside the runs it is
about: each data folder has its own instance (the embedded default), and in production
it is in PostgreSQL with the rest of Dagster's state. Written only by the
`failed_partitions` sensor (one write per tick that changed it); read by anyone who wants
to know which partitions are being retried and which wait for a person
(`flagged_partitions`: the health report, the command line). A partition is in it while
its latest run is unhealthy; a healthy run removes it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import orjson

from enrichment_assets.partition_retry import PartitionRetry

if TYPE_CHECKING:
    from dagster import DagsterInstance

STATE_VERSION = 1


# The key of the retry state in the instance's key-value storage.
RETRIES_KEY = "enrichment_assets/partition_retries"


def read_retries(instance: DagsterInstance) -> dict[str, PartitionRetry]:
    """Every partition in the retry state, by partition key ({} when there is none)."""
    stored = instance.daemon_cursor_storage.get_cursor_values({RETRIES_KEY}).get(RETRIES_KEY)
    if not stored:
        return {}
    data = orjson.loads(stored)
    return {key: PartitionRetry(**entry) for key, entry in data.get("partitions", {}).items()}


def write_retries(instance: DagsterInstance, entries: dict[str, PartitionRetry]) -> None:
    payload = {
        "version": STATE_VERSION,
        "partitions": {key: asdict(entries[key]) for key in sorted(entries)},
    }
    instance.daemon_cursor_storage.set_cursor_values({RETRIES_KEY: orjson.dumps(payload).decode()})


def flagged_partitions(instance: DagsterInstance) -> list[PartitionRetry]:
    """Partitions out of tries, waiting for a person (re-materializing one resets it)."""
    return [entry for entry in read_retries(instance).values() if entry.flagged]
