"""`normalized_conversations`: repaired, normalized text and the training-ready exports."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from enrichment_assets.defs.checks import (
    gate_specs,
    partitioned_check_spec,
    prewarm_gate,
    run_gate,
)
from enrichment_assets.defs.conversations.enriched import enriched_conversations
from enrichment_assets.defs.conversations.layer_io import (
    empty_frame,
    map_row_groups,
    partition_writer,
    row_count,
    write_layer,
)
from enrichment_assets.defs.conversations.partitions import batch_partitions
from enrichment_assets.defs.metadata import (
    ProgressLog,
    layer_table,
    path_value,
    preview,
    rows_conserved,
)
from enrichment_assets.defs.resources import LakeResource
from enrichment_assets.exports import (
    CONVERSATION_KINDS,
    ExportFile,
    retire_superseded,
    write_exports,
)
from enrichment_assets.faults import fault_point
from enrichment_assets.identity import identity_index
from enrichment_assets.lake import Lake
from enrichment_assets.normalization import normalize, normalize_row_group
from enrichment_assets.status import apply_changes
from enrichment_assets.workers import loaded


@asset(
    partitions_def=batch_partitions,
    group_name="conversations",
    kinds={"duckdb", "polars", "parquet"},
    deps=[enriched_conversations],
    check_specs=[
        partitioned_check_spec(
            "enriched_rows_conserved",
            asset="normalized_conversations",
            partitions_def=batch_partitions,
            blocking=True,
            description="enriched rows = normalized rows, for this partition.",
        ),
        partitioned_check_spec(
            "exports_hold_completed",
            asset="normalized_conversations",
            partitions_def=batch_partitions,
            blocking=True,
            description=(
                "Every completed conversation of this partition has exactly one line in the "
                "enriched and in the training export, written durably before it is completed."
            ),
        ),
        *gate_specs("normalized_conversations", batch_partitions),
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
    (OpenAI chat format) and `export/quarantine/<partition>.jsonl`, durably, and only
    then marks the conversations `completed`. The exports hold the current version of
    each conversation: when this partition's versions replace conversations another
    partition exported, those leave that partition's exports first (`superseded`).
    """
    store = lake.lake
    prewarm_gate(store)
    batch = context.partition_key
    source = store.layer_path("enriched", batch)
    target = store.layer_path("normalized", batch)
    with partition_writer(store, batch, context.run.run_id, context.log.info):
        changes, first, failed = _normalize_layer(lake, source, target, ProgressLog(context.log))
        fault_point("normalized")
        # Versions replaced by this partition's leave the other partitions' exports first,
        # so that a conversation is never in two export files at once.
        stale = identity_index(store, store.app_db_url).stale_rows(batch)
        retired = retire_superseded(
            store, stale.elsewhere, batch, owner=context.run.run_id, log=context.log.info
        )
        exports, gate_results = _exports_and_gate(store, batch, target, stale.own)
        # Only now, with their lines on disk, are the conversations completed.
        completed = _complete(store, batch, changes, stale.own)

    enriched_rows, normalized_rows = row_count(source), row_count(target)
    lines = {kind: exports[kind].lines for kind in CONVERSATION_KINDS}
    return MaterializeResult(
        metadata={
            **layer_table(target, normalized_rows),
            "completed": completed,
            "normalization_failed": failed,
            "superseded_here": len(stale.own),
            "superseded_elsewhere": MetadataValue.json(retired),
            "path": path_value(target),
            **{f"export_{kind}": str(f.path.resolve()) for kind, f in exports.items()},
            "preview": preview(
                first if first is not None else pl.DataFrame(),
                ["record_index", "conversation_id", "status", "messages"],
            ),
        },
        check_results=[
            rows_conserved(
                "enriched_rows_conserved",
                ("enriched", enriched_rows),
                ("normalized", normalized_rows),
            ),
            _exports_check(completed, lines),
            *gate_results,
        ],
    )


def _exports_check(completed: int, lines: dict[str, int]) -> AssetCheckResult:
    """`exports_hold_completed`: one line per completed conversation in every export."""
    return AssetCheckResult(
        check_name="exports_hold_completed",
        passed=all(n == completed for n in lines.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"completed": completed, **{f"{k}_lines": n for k, n in lines.items()}},
    )


def _exports_and_gate(
    store: Lake, batch: str, target: Path, superseded: list[int]
) -> tuple[dict[str, ExportFile], list[AssetCheckResult]]:
    """Write the exports (without the `superseded` records) while the gate checks the
    layer: they do not wait for it."""
    with ThreadPoolExecutor(1, thread_name_prefix="exports") as pool:
        exports_written = pool.submit(write_exports, store, batch, superseded)
        gate_results = run_gate(store, "normalized_conversations", target, batch)
        return exports_written.result(), gate_results


def _normalize_layer(
    lake: LakeResource, source: Path, target: Path, progress: ProgressLog
) -> tuple[list[pl.DataFrame], pl.DataFrame | None, int]:
    """Write the normalized layer from the enriched one, row group by row group: each
    chunk's status changes, the first rows (the preview) and how many failed."""
    changes: list[pl.DataFrame] = []
    first: pl.DataFrame | None = None
    failed = 0
    schema = normalize(empty_frame(source)).to_arrow().schema
    # Worker processes only for more than a chunk of conversations: a small partition
    # whose enriched file came in several row groups (retried conversations) starts none.
    workers = lake.worker_count if row_count(source) > lake.chunk_rows else 1
    with write_layer(target, schema) as out:
        for part in map_row_groups(normalize_row_group, source, workers):
            table = loaded(part.table)
            out.write(table)
            failed += part.failed
            changes.append(part.changes)
            if first is None:
                first = pl.from_arrow(table.slice(0, 5))  # type: ignore[assignment]
            progress(f"normalized {out.rows} conversations")
    return changes, first, failed


def _complete(store: Lake, batch: str, changes: list[pl.DataFrame], superseded: list[int]) -> int:
    """Apply the normalization's status changes (`superseded` for the records a newer
    version replaced); returns how many conversations are completed."""
    status_changes = pl.concat(changes) if changes else pl.DataFrame()
    if superseded and status_changes.height:
        status_changes = status_changes.with_columns(
            pl.when(pl.col("record_index").is_in(superseded))
            .then(pl.lit("superseded"))
            .otherwise(pl.col("status"))
            .alias("status")
        )
    if status_changes.height:
        apply_changes(store, batch, status_changes, datetime.now(UTC))
    return int((status_changes["status"] == "completed").sum()) if status_changes.height else 0
