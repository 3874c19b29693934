"""An unhealthy partition as the `failed_partitions` sensor retries it: why, which run
showed it, how many tries so far (stored in the Dagster instance by
`enrichment_assets/defs/automation/retry_state.py`; read by the health metrics)."""

from __future__ import annotations

from dataclasses import dataclass

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
