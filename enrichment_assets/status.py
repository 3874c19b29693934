"""Per-conversation status, kept as one Parquet file per batch partition.

Each layer moves its rows along the lifecycle of SPEC.md (`STATUSES`):
not_started → validated | validation_failed → enrichment_in_progress → enriched
→ completed | normalization_failed. A row is keyed by (partition, record_index):
the record's place in the frozen batch, which exists even when its id does not.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from enrichment_assets.app_db import app_db_url, publish_status
from enrichment_assets.contract import STATUSES
from enrichment_assets.lake import Lake, atomic_path

STATUS_SCHEMA: dict[str, pl.DataType] = {
    "partition": pl.String(),
    "record_index": pl.Int64(),
    "conversation_id": pl.String(),
    "status": pl.Enum(STATUSES),
    "retry_count": pl.Int64(),
    "last_attempt": pl.Datetime("us", "UTC"),
    "last_error": pl.String(),
    "raw_stored_at": pl.Datetime("us", "UTC"),
    "enriched_at": pl.Datetime("us", "UTC"),
    "updated_at": pl.Datetime("us", "UTC"),
}

# Columns a change may set; anything a change leaves out keeps its value.
_CHANGEABLE = ("status", "last_attempt", "last_error", "enriched_at", "retry_count")


def read_status(lake: Lake, batch: str) -> pl.DataFrame:
    path = lake.layer_path("status", batch)
    if not path.exists():
        return pl.DataFrame(schema=STATUS_SCHEMA)
    return pl.read_parquet(path)


def write_status(lake: Lake, batch: str, frame: pl.DataFrame) -> None:
    """Replace the batch's status Parquet; then publish it to the application
    database when one is configured (`ENRICH_APP_DB_URL`), in one transaction."""
    frame = frame.select(list(STATUS_SCHEMA)).cast(STATUS_SCHEMA)
    with atomic_path(lake.layer_path("status", batch)) as tmp:
        frame.write_parquet(tmp)
    url = app_db_url()
    if url is not None:
        publish_status(url, batch, frame)


def register_records(
    lake: Lake, batch: str, records: pl.DataFrame, raw_stored_at: datetime
) -> None:
    """Start (or restart) the lifecycle of every raw record as `not_started`.

    The retry count survives a re-ingest of the same batch and counts attempts: a
    re-materialization is one more (it is how a run that died mid-enrichment, and
    left rows `enrichment_in_progress`, is recovered).
    """
    previous = read_status(lake, batch).select("record_index", "retry_count")
    fresh = (
        records.select("record_index", "conversation_id")
        .join(previous, on="record_index", how="left")
        .with_columns(
            pl.lit(batch).alias("partition"),
            pl.lit("not_started").alias("status"),
            (pl.col("retry_count") + 1).fill_null(0),
            pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("last_attempt"),
            pl.lit(None, dtype=pl.String()).alias("last_error"),
            pl.lit(raw_stored_at).cast(pl.Datetime("us", "UTC")).alias("raw_stored_at"),
            pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("enriched_at"),
            pl.lit(raw_stored_at).cast(pl.Datetime("us", "UTC")).alias("updated_at"),
        )
    )
    write_status(lake, batch, fresh)


def apply_changes(lake: Lake, batch: str, changes: pl.DataFrame, now: datetime) -> None:
    """Apply `changes` (record_index plus any of the changeable columns) to the batch.

    A row re-entering `enrichment_in_progress` from anything but `validated` (a
    scoped re-enrichment of a completed or failed conversation) is one more
    attempt: its retry count goes up, unless the change sets the count itself.
    """
    current = read_status(lake, batch)
    present = [c for c in _CHANGEABLE if c in changes.columns]
    changes = changes.select("record_index", *present).cast({c: STATUS_SCHEMA[c] for c in present})
    retried = []
    if "retry_count" not in present:
        retried = [
            pl.when(
                (pl.col("status__new") == "enrichment_in_progress")
                & (pl.col("status") != "validated")
            )
            .then(pl.col("retry_count") + 1)
            .otherwise(pl.col("retry_count"))
            .alias("retry_count")
        ]
    updated = (
        current.join(changes, on="record_index", how="left", suffix="__new")
        .with_columns(
            retried
            + [
                pl.when(pl.col("status__new").is_not_null())
                .then(pl.col(f"{c}__new"))
                .otherwise(pl.col(c))
                .alias(c)
                for c in present
            ]
            + [
                pl.when(pl.col("status__new").is_not_null())
                .then(pl.lit(now).cast(pl.Datetime("us", "UTC")))
                .otherwise(pl.col("updated_at"))
                .alias("updated_at")
            ]
        )
        .drop([f"{c}__new" for c in present])
    )
    write_status(lake, batch, updated)


def status_counts(frame: pl.DataFrame) -> dict[str, int]:
    counts = dict(frame.group_by("status").len().iter_rows())
    return {status: int(counts.get(status, 0)) for status in STATUSES}
