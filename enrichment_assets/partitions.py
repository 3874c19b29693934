"""Partitions: one dynamic partition per landed batch of files; UTC days for summaries."""

from __future__ import annotations

import os
from datetime import date

from dagster import DailyPartitionsDefinition, DynamicPartitionsDefinition

# A batch is one file, or a bounded group of small files found together. Its key is
# derived from the content (see `lake.batch_key`), so re-landing the same bytes
# names the same partition.
batch_partitions = DynamicPartitionsDefinition(name="batches")


def _summaries_start_date() -> str:
    """`ENRICH_SUMMARIES_START_DATE` (YYYY-MM-DD, default 2024-01-01): the first summary day."""
    raw = os.environ.get("ENRICH_SUMMARIES_START_DATE", "").strip() or "2024-01-01"
    try:
        date.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"ENRICH_SUMMARIES_START_DATE={raw!r}: expected YYYY-MM-DD") from None
    return raw


# One partition per UTC day, for `conversation_summaries`; a day exists once it is over.
summary_days = DailyPartitionsDefinition(start_date=_summaries_start_date(), timezone="UTC")
