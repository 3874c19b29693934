"""What a run may spend on LLM requests, and the stop when it has.

A `SpendBudget` belongs to one run (the enricher is built once per materialization).
Before a request is sent the enricher asks `exhausted`; after each answer it
`charge`s what the answer cost (its usage at the model's price). Sending stops once
the measured spend reaches the limit: the requests already in flight finish (one
request-wave, at most `concurrency` requests, may pass the limit), the rest are not
sent and stay NULL with the error `budget exhausted`.

The limit is the smaller of the run's budget (`ENRICH_LLM_BUDGET_USD`) and what is
left of the daily limit (`ENRICH_LLM_DAILY_BUDGET_USD`) when the run starts. The
budget window is the UTC day: a partition stopped by its budget is retried by the
failed-partitions sensor at the next window, not before.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

# The `enrichment.error` of a conversation the budget kept from being sent.
BUDGET_EXHAUSTED = "budget exhausted"
# How a refusal before any request starts (the failed-partitions sensor looks for it).
OVER_BUDGET = "over budget"


class OverBudget(ValueError):
    """The estimate of a run is over what it may spend: nothing is sent."""


class SpendBudget:
    """The measured spend of one run against its limit (None: no limit); thread-safe."""

    def __init__(self, limit_usd: float | None = None) -> None:
        self.limit_usd = limit_usd
        self._spent = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SpendBudget(limit_usd={self.limit_usd!r}, spent_usd={self.spent_usd:.6f})"

    @property
    def spent_usd(self) -> float:
        with self._lock:
            return self._spent

    @property
    def exhausted(self) -> bool:
        """True once the measured spend has reached the limit."""
        if self.limit_usd is None:
            return False
        with self._lock:
            return self._spent >= self.limit_usd

    def charge(self, usd: float) -> None:
        with self._lock:
            self._spent += max(usd, 0.0)


def run_limit(run_budget_usd: float | None, daily_left_usd: float | None) -> float | None:
    """What this run may spend: the smaller of its budget and the daily limit's rest."""
    limits = [limit for limit in (run_budget_usd, daily_left_usd) if limit is not None]
    return max(min(limits), 0.0) if limits else None


def window_start(now: datetime) -> datetime:
    """The start of the budget window (the UTC day) holding `now`."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def next_window(now: datetime) -> datetime:
    """When the budget window after the one holding `now` opens."""
    return window_start(now) + timedelta(days=1)
