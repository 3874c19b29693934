"""The normalized layer's chunk work: text repair and normalization of one row group.

Runs in a worker process (see `workers`), so this module must not import Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from enrichment_assets.text import normalize_text_series
from enrichment_assets.workers import SharedTable, share


def _repair_messages(chunk: pl.DataFrame) -> pl.DataFrame:
    flat = chunk.select("record_index", "messages").explode("messages").unnest("messages")
    flat = flat.with_columns(normalize_text_series(flat["content"]).alias("content"))
    failed = (
        flat.filter(pl.col("content").is_null() | (pl.col("content") == ""))
        .group_by("record_index")
        .agg(pl.len().alias("empty_messages"))
    )
    rebuilt = flat.group_by("record_index", maintain_order=True).agg(
        pl.struct("role", "content", "timestamp").alias("messages")
    )
    return rebuilt.join(failed, on="record_index", how="left")


def normalize(chunk: pl.DataFrame) -> pl.DataFrame:
    """Repair and normalize one chunk of the enriched layer."""
    repaired = _repair_messages(chunk)
    summary = normalize_text_series(chunk["enrichment"].struct.field("summary"))
    return (
        chunk.drop("messages")
        .join(repaired, on="record_index", how="left", maintain_order="left")
        .with_columns(
            pl.col("enrichment").struct.with_fields(summary.alias("summary")),
            pl.when(pl.col("empty_messages").is_null())
            .then(pl.lit("completed"))
            .otherwise(pl.lit("normalization_failed"))
            .alias("status"),
            pl.when(pl.col("empty_messages").is_null())
            .then(pl.lit(None, pl.String))
            .otherwise(
                pl.format("{} message(s) empty after text normalization", pl.col("empty_messages"))
            )
            .alias("normalization_error"),
        )
        .drop("empty_messages")
    )


@dataclass(frozen=True)
class NormalizedChunk:
    """One enriched row group, normalized, with the status change of each row."""

    table: pa.Table | SharedTable
    changes: pl.DataFrame  # record_index, status, last_error
    failed: int  # rows normalization_failed


def normalize_row_group(enriched_path: str, row_group: int, scratch: str | None) -> NormalizedChunk:
    """Normalize row group `row_group` of an enriched layer file (`normalize`)."""
    chunk: pl.DataFrame = pl.from_arrow(  # type: ignore[assignment]
        pq.ParquetFile(enriched_path).read_row_group(row_group)
    )
    normalized = normalize(chunk)
    changes = normalized.select(
        "record_index",
        "status",
        # A failed annotation stays visible: the conversation completes, its error too.
        pl.coalesce("normalization_error", pl.col("enrichment").struct.field("error")).alias(
            "last_error"
        ),
    )
    return NormalizedChunk(
        table=share(normalized.to_arrow(), scratch),
        changes=changes,
        failed=int((normalized["status"] == "normalization_failed").sum()),
    )
