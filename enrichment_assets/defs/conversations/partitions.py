"""Partitions: one dynamic partition per landed batch of files; one per UTC day with data.

Both are dynamic: a partition exists once there is something in it, so the UI shows no
range of empty ("Missing") partitions before the first data or between data days.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

from dagster import DagsterInstance, DynamicPartitionsDefinition

from enrichment_assets import settings as env_settings

# A batch is one file, or a bounded group of small files found together. Its key is
# derived from the content (see `lake.batch_key`), so re-landing the same bytes
# names the same partition.
batch_partitions = DynamicPartitionsDefinition(name="batches")

# One partition per UTC day (YYYY-MM-DD) that holds messages, for `conversation_summaries`:
# registered by `enrich run` / `enrich demo`, the `stale_summaries` sensor (late data) and
# the `summaries_daily` schedule, once the day is over. A day with data earlier than every
# registered one simply extends the range.
summary_days = DynamicPartitionsDefinition(name="summary_days")


def summaries_start_date() -> date | None:
    """`ENRICH_SUMMARIES_START_DATE` (YYYY-MM-DD): no day before it is summarized; unset, the
    first day with data is the first partition."""
    return env_settings.iso_date("ENRICH_SUMMARIES_START_DATE")


# Read when the code location loads too, so that a bad value fails the load with its name.
summaries_start_date()


def is_summary_day(day: str, today: date | None = None) -> bool:
    """A UTC day that can be a summary partition: over (before `today`), and not before
    `ENRICH_SUMMARIES_START_DATE` when it is set."""
    try:
        value = date.fromisoformat(day)
    except ValueError:
        return False
    today = today or datetime.now(UTC).date()
    start = summaries_start_date()
    return value < today and (start is None or value >= start)


def register_summary_days(instance: DagsterInstance, days: Iterable[str]) -> list[str]:
    """Add the day partitions the instance does not know yet; returns the ones added."""
    new = [
        day
        for day in dict.fromkeys(days)
        if not instance.has_dynamic_partition(summary_days.name, day)
    ]
    if new:
        instance.add_dynamic_partitions(summary_days.name, new)
    return new
