"""The retry state of unhealthy partitions: `<data dir>/lake/partition_retries.json`.

Written only by the `failed_partitions` sensor (atomically); read by anyone who
wants to know which partitions are being retried and which wait for a person
(`flagged_partitions`: the health report, the command line). A partition is in
the file while its latest run is unhealthy; a healthy run removes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from enrichment_assets.lake import Lake, write_bytes_atomic

STATE_VERSION = 1

# Why a partition is retried.
RUN_FAILED = "run_failed"
GATE_FAILED = "gate_failed"
NULL_AI_FIELDS = "null_ai_fields"
NEVER_RAN = "never_ran"  # registered, then its command died before it got to it
# The run's LLM budget stopped it (or refused it): retried when the budget window allows.
BUDGET_STOPPED = "budget_exhausted"
REASONS = (RUN_FAILED, GATE_FAILED, NULL_AI_FIELDS, NEVER_RAN, BUDGET_STOPPED)


@dataclass
class PartitionRetry:
    """One unhealthy partition: why, which run showed it, how many tries so far."""

    partition: str
    reason: str  # one of REASONS
    detail: str  # one line for people
    failed_run_id: str  # the latest run of the partition, the one that showed the problem
    failed_at: float  # when that run ended (epoch seconds)
    tries: int  # retries the sensor already made; 0 = a first or hand-started run failed
    next_attempt_at: float | None = None  # None once flagged
    flagged: bool = False  # out of tries: waits for a person to re-materialize it
    flagged_at: float | None = None


def retries_path(lake: Lake) -> Path:
    return lake.data_dir / "lake" / "partition_retries.json"


def read_retries(lake: Lake) -> dict[str, PartitionRetry]:
    """Every partition in the retry state, by partition key ({} when there is none)."""
    path = retries_path(lake)
    if not path.exists():
        return {}
    data = orjson.loads(path.read_bytes())
    return {key: PartitionRetry(**entry) for key, entry in data.get("partitions", {}).items()}


def write_retries(lake: Lake, entries: dict[str, PartitionRetry]) -> None:
    payload = {
        "version": STATE_VERSION,
        "partitions": {key: asdict(entries[key]) for key in sorted(entries)},
    }
    write_bytes_atomic(retries_path(lake), orjson.dumps(payload, option=orjson.OPT_INDENT_2))


def flagged_partitions(lake: Lake) -> list[PartitionRetry]:
    """Partitions out of tries, waiting for a person (re-materializing one resets it)."""
    return [entry for entry in read_retries(lake).values() if entry.flagged]
