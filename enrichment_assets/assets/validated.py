"""`validated_conversations`: the records that satisfy the contract; the rest quarantined."""

from collections import Counter
from datetime import UTC, datetime

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from enrichment_assets.assets.layer_io import map_row_groups, row_count, write_layer
from enrichment_assets.assets.metadata import ProgressLog, path_value, preview
from enrichment_assets.assets.raw import raw_conversations
from enrichment_assets.checks.gx_suites import gate_specs, prewarm_gate, run_gate
from enrichment_assets.partitions import batch_partitions
from enrichment_assets.resources import LakeResource
from enrichment_assets.status import apply_changes
from enrichment_assets.validation import QUARANTINE_SCHEMA, VALIDATED_SCHEMA, validate_row_group
from enrichment_assets.workers import loaded


@asset(
    partitions_def=batch_partitions,
    group_name="conversations",
    kinds={"parquet", "pydantic"},
    deps=[raw_conversations],
    check_specs=[
        AssetCheckSpec(
            "raw_rows_conserved",
            asset="validated_conversations",
            blocking=True,
            description="raw rows = validated + quarantined, for this partition.",
        ),
        *gate_specs("validated_conversations"),
    ],
)
def validated_conversations(
    context: AssetExecutionContext, lake: LakeResource
) -> MaterializeResult:
    """Records that satisfy the pydantic contract (`contract.Conversation`).

    UUID ids, at least one user and one assistant message, known roles (aliases
    such as `human`/`gpt` mapped onto system | user | assistant), non-empty
    content, parseable timestamps, tier in its set when given. Each row group of
    the raw layer is validated in one call, in worker processes (`workers`).
    Every other record goes to the quarantine table with a machine-readable
    report: a list of `{rule, path, value}`.
    """
    store = lake.lake
    prewarm_gate(store)
    progress = ProgressLog(context.log)
    batch = context.partition_key
    raw_path = store.layer_path("raw", batch)
    target = store.layer_path("validated", batch)
    quarantine_target = store.layer_path("quarantine", batch)
    rules: Counter[str] = Counter()
    changes: list[pl.DataFrame] = []
    raw_rows = 0
    preview_valid: pl.DataFrame | None = None
    preview_rejected: list[dict] = []
    with (
        write_layer(target, VALIDATED_SCHEMA) as valid_out,
        write_layer(quarantine_target, QUARANTINE_SCHEMA) as rejected_out,
    ):
        for part in map_row_groups(validate_row_group, raw_path, lake.worker_count):
            valid_table = loaded(part.valid)
            valid_out.write(valid_table)
            rejected_out.write(part.rejected)
            for rule_list in part.rejected["rules"].to_list():
                rules.update(rule_list)
            if len(preview_rejected) < 5:
                preview_rejected.extend(part.rejected.head(5).to_dicts())
            if preview_valid is None and valid_table.num_rows:
                preview_valid = pl.from_arrow(valid_table.slice(0, 5))  # type: ignore[assignment]
            changes.append(part.changes)
            raw_rows += part.raw_rows
            progress(f"validated {raw_rows} raw rows")
    if changes:
        apply_changes(store, batch, pl.concat(changes), datetime.now(UTC))

    # Counted again from the files on disk: the check proves what was written.
    raw_rows = row_count(raw_path)
    validated, quarantined = row_count(target), row_count(quarantine_target)
    return MaterializeResult(
        metadata={
            "rows": validated,
            "quarantined": quarantined,
            "raw_rows": raw_rows,
            "quarantine_rules": MetadataValue.json(dict(rules.most_common())),
            "path": path_value(target),
            "quarantine_path": path_value(quarantine_target),
            "preview": preview(
                preview_valid if preview_valid is not None else pl.DataFrame(),
                ["record_index", "conversation_id", "user_id", "tier", "created_at"],
            ),
            "quarantine_preview": preview(
                pl.DataFrame(preview_rejected[:5]) if preview_rejected else pl.DataFrame(),
                ["record_index", "source_file", "position", "validation_errors"],
            ),
        },
        check_results=[
            AssetCheckResult(
                check_name="raw_rows_conserved",
                passed=raw_rows == validated + quarantined,
                severity=AssetCheckSeverity.ERROR,
                metadata={"raw": raw_rows, "validated": validated, "quarantined": quarantined},
            ),
            *run_gate(store, "validated_conversations", target, batch),
        ],
    )
