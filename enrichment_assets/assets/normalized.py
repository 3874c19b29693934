"""`normalized_conversations`: repaired, normalized text and the training-ready exports."""

from datetime import UTC, datetime

import duckdb
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    asset,
)

from enrichment_assets.assets.enriched import enriched_conversations
from enrichment_assets.assets.layer_io import empty_frame, read_chunks, row_count, write_layer
from enrichment_assets.assets.metadata import path_value, preview
from enrichment_assets.checks.gx_suites import gate_specs, run_gate
from enrichment_assets.lake import Lake, atomic_path
from enrichment_assets.partitions import batch_partitions
from enrichment_assets.resources import LakeResource
from enrichment_assets.sql_files import load_sql
from enrichment_assets.status import apply_changes
from enrichment_assets.text import normalize_text_series

EXPORTS = {
    "enriched": ("normalized", "export_enriched"),
    "training": ("normalized", "export_training"),
    "quarantine": ("quarantine", "export_quarantine"),
}


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


def write_exports(lake: Lake, batch: str) -> dict[str, str]:
    """Write the partition's export files (one per kind), each atomically."""
    written = {}
    con = duckdb.connect()
    try:
        con.execute(load_sql("macros"))
        for kind, (layer, statement) in EXPORTS.items():
            target = lake.export_path(kind, batch)
            with atomic_path(target) as tmp:
                con.execute(load_sql(statement), [str(lake.layer_path(layer, batch)), str(tmp)])
            written[kind] = str(target.resolve())
    finally:
        con.close()
    return written


@asset(
    partitions_def=batch_partitions,
    group_name="conversations",
    kinds={"duckdb", "polars", "parquet"},
    deps=[enriched_conversations],
    check_specs=[
        AssetCheckSpec(
            "enriched_rows_conserved",
            asset="normalized_conversations",
            blocking=True,
            description="enriched rows = normalized rows, for this partition.",
        ),
        *gate_specs("normalized_conversations"),
    ],
)
def normalized_conversations(
    context: AssetExecutionContext, lake: LakeResource
) -> MaterializeResult:
    """Training-ready conversations: text repaired and normalized, exports written.

    Mojibake repaired (cp1252 and MacRoman kinds) only where a set-based scan of
    the column flags it, Unicode NFC, control characters removed, whitespace
    normalized, roles canonical, timestamps UTC ISO-8601, stable key order.
    Writes `export/enriched/<partition>.jsonl`, `export/training/<partition>.jsonl`
    (OpenAI chat format) and `export/quarantine/<partition>.jsonl`.
    """
    store = lake.lake
    batch = context.partition_key
    source = store.layer_path("enriched", batch)
    target = store.layer_path("normalized", batch)
    changes: list[pl.DataFrame] = []
    first: pl.DataFrame | None = None
    failed = 0
    with write_layer(target, normalize(empty_frame(source)).to_arrow().schema) as out:
        for chunk in read_chunks(source, lake.chunk_rows):
            normalized = normalize(chunk)
            out.write(normalized)
            failed += int((normalized["status"] == "normalization_failed").sum())
            changes.append(
                normalized.select(
                    "record_index",
                    "status",
                    # A failed annotation stays visible: the conversation completes, its error too.
                    pl.coalesce(
                        "normalization_error", pl.col("enrichment").struct.field("error")
                    ).alias("last_error"),
                )
            )
            if first is None:
                first = normalized
            context.log.info(f"normalized {out.rows} conversations")
    now = datetime.now(UTC)
    if changes:
        apply_changes(store, batch, pl.concat(changes), now)
    exports = write_exports(store, batch)

    enriched_rows, normalized_rows = row_count(source), row_count(target)
    return MaterializeResult(
        metadata={
            "rows": normalized_rows,
            "completed": normalized_rows - failed,
            "normalization_failed": failed,
            "path": path_value(target),
            **{f"export_{kind}": path for kind, path in exports.items()},
            "preview": preview(
                first if first is not None else pl.DataFrame(),
                ["record_index", "conversation_id", "status", "messages"],
            ),
        },
        check_results=[
            AssetCheckResult(
                check_name="enriched_rows_conserved",
                passed=enriched_rows == normalized_rows,
                severity=AssetCheckSeverity.ERROR,
                metadata={"enriched": enriched_rows, "normalized": normalized_rows},
            ),
            *run_gate(store, "normalized_conversations", target, batch),
        ],
    )
