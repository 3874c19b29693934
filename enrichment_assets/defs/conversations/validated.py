"""`validated_conversations`: the records that satisfy the contract; the rest quarantined."""

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster import (
    AssetCheckResult,
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
from enrichment_assets.defs.conversations.layer_io import (
    map_row_groups,
    partition_writer,
    row_count,
    staging_path,
    write_layer,
)
from enrichment_assets.defs.conversations.partitions import batch_partitions
from enrichment_assets.defs.conversations.raw import raw_conversations
from enrichment_assets.defs.metadata import (
    ProgressLog,
    layer_table,
    path_value,
    preview,
    rows_conserved,
)
from enrichment_assets.defs.resources import LakeResource
from enrichment_assets.faults import fault_point
from enrichment_assets.identity import (
    BATCH_COLUMNS,
    DUPLICATE,
    ID_CONFLICT,
    SUPERSEDED,
    identity_index,
    set_aside_reason,
)
from enrichment_assets.lake import Lake
from enrichment_assets.status import (
    CHANGE_SCHEMA,
    apply_changes,
    apply_staged_changes,
    change_rows,
)
from enrichment_assets.validation import QUARANTINE_SCHEMA, VALIDATED_SCHEMA, validate_row_group
from enrichment_assets.workers import loaded

# The status columns a validation chunk's changes set (`ValidatedChunk.changes`).
VALIDATION_CHANGES = ("status", "last_error", "last_attempt")


def parsed_records(raw_path: Path) -> int:
    """Raw rows that hold a parsed record (`record_json` not NULL), from the file's footer."""
    metadata = pq.ParquetFile(raw_path).metadata
    column = metadata.schema.names.index("record_json")
    parsed = 0
    for row_group in range(metadata.num_row_groups):
        group = metadata.row_group(row_group)
        statistics = group.column(column).statistics
        if statistics is None or not statistics.has_null_count:
            return metadata.num_rows  # no statistics: count every row
        parsed += group.num_rows - statistics.null_count
    return parsed


def _set_aside_quarantine(raw_path: Path, set_aside: pl.DataFrame) -> pa.Table:
    """Quarantine rows (QUARANTINE_SCHEMA) for the records the identity index set aside."""
    wanted = pa.array(set_aside["record_index"].to_list(), pa.int64())
    raw = pq.read_table(
        raw_path,
        columns=[
            "partition",
            "record_index",
            "source_file",
            "position",
            "content_hash",
            "conversation_id",
            "raw_text",
        ],
        filters=pc.field("record_index").isin(wanted),
    )
    rows = pl.from_arrow(raw).join(set_aside, on="record_index", how="inner")  # type: ignore[arg-type]
    reports = [
        orjson.dumps(
            [
                {
                    "rule": row["outcome"],
                    "path": "$.conversation_id",
                    "value": row["conversation_id"],
                    "kept": {
                        "partition": row["kept_partition"],
                        "record_index": row["kept_record_index"],
                        "source_file": row["kept_source_file"],
                        "position": row["kept_position"],
                    },
                }
            ]
        ).decode()
        for row in rows.iter_rows(named=True)
    ]
    return (
        rows.with_columns(
            pl.Series("validation_errors", reports, pl.String),
            pl.concat_list(pl.col("outcome")).alias("rules"),
        )
        .select(QUARANTINE_SCHEMA.names)
        .to_arrow()
        .cast(QUARANTINE_SCHEMA)
    )


def _finalize_layers(
    lake: Lake,
    batch: str,
    staged_valid: Path,
    staged_rejected: Path,
    set_aside: pl.DataFrame,
) -> None:
    """Move the staged layers into place, without the records the identity index set aside
    (which join the quarantine, in record order)."""
    target = lake.layer_path("validated", batch)
    quarantine_target = lake.layer_path("quarantine", batch)
    if set_aside.height == 0:
        os.replace(staged_valid, target)
        os.replace(staged_rejected, quarantine_target)
        return
    dropped = pa.array(set_aside["record_index"].to_list(), pa.int64())
    staged = pq.ParquetFile(staged_valid)
    with write_layer(target, VALIDATED_SCHEMA) as out:
        for row_group in range(staged.num_row_groups):
            table = staged.read_row_group(row_group)
            out.write(table.filter(pc.invert(pc.is_in(table["record_index"], dropped))))
    quarantined = pa.concat_tables(
        [
            pq.read_table(staged_rejected).cast(QUARANTINE_SCHEMA),
            _set_aside_quarantine(lake.layer_path("raw", batch), set_aside),
        ]
    ).sort_by("record_index")
    with write_layer(quarantine_target, QUARANTINE_SCHEMA) as out:
        out.write(quarantined)


def _status_changes(changes: list[pl.DataFrame], set_aside: pl.DataFrame) -> pl.DataFrame:
    """The validation's status changes, with the set-aside records' own status and reason."""
    validation = pl.concat(changes, rechunk=False) if changes else pl.DataFrame()
    if set_aside.height == 0:
        return validation
    reasons = [set_aside_reason(row) for row in set_aside.iter_rows(named=True)]
    aside = set_aside.select(
        "record_index",
        pl.col("outcome").alias("status"),
        pl.Series("last_error", reasons, pl.String),
    ).with_columns(pl.lit(datetime.now(UTC)).alias("last_attempt"))
    return pl.concat(
        [validation.join(aside, on="record_index", how="anti"), aside], how="diagonal_relaxed"
    )


@asset(
    partitions_def=batch_partitions,
    group_name="conversations",
    kinds={"parquet", "pydantic"},
    deps=[raw_conversations],
    check_specs=[
        partitioned_check_spec(
            "raw_rows_conserved",
            asset="validated_conversations",
            partitions_def=batch_partitions,
            blocking=True,
            description="raw rows = validated + quarantined (set-aside included), per partition.",
        ),
        *gate_specs("validated_conversations", batch_partitions),
    ],
)
def validated_conversations(
    context: AssetExecutionContext, lake: LakeResource
) -> MaterializeResult:
    """Records that satisfy the pydantic contract (`contract.Conversation`), one per identity.

    UUID ids, at least one user and one assistant message, known roles (aliases
    such as `human`/`gpt` mapped onto system | user | assistant), non-empty
    content, parseable timestamps, tier in its set when given. Each row group of
    the raw layer is validated in one call, in worker processes (`workers`).
    Every other record goes to the quarantine table with a machine-readable
    report: a list of `{rule, path, value}`.

    Then the identity index (`identity.py`) sets aside, into the quarantine with the
    record that was kept: exact repeats (`duplicate`), other conversations under an id
    used earlier in the batch (`id_conflict`), content already in the lake (`duplicate`)
    and versions older than one landed since (`superseded`). So each conversation is
    enriched and exported once, in its newest landed version.
    """
    store = lake.lake
    prewarm_gate(store)
    batch = context.partition_key
    raw_path = store.layer_path("raw", batch)
    target = store.layer_path("validated", batch)
    quarantine_target = store.layer_path("quarantine", batch)
    landed_at = datetime.fromisoformat(store.load_manifest(batch).registered_at)
    with (
        partition_writer(store, batch, context.run.run_id, context.log.info),
        staging_path(target) as staged_valid,
        staging_path(quarantine_target) as staged_rejected,
        # The status changes, chunk by chunk: a million of them stay on disk.
        staging_path(store.layer_path("status", batch)) as staged_changes,
    ):
        tally = _validate_layer(
            lake, raw_path, (staged_valid, staged_rejected, staged_changes), context
        )
        set_aside = identity_index(store, store.app_db_url).resolve_and_register(
            batch, landed_at, tally.identities(), owner=context.run.run_id
        )
        fault_point("validated")
        _finalize_layers(store, batch, staged_valid, staged_rejected, set_aside)
        _apply_validation_statuses(store, batch, staged_changes, set_aside)
        # Counted again from the files on disk: the check proves what was written.
        counts = (row_count(raw_path), row_count(target), row_count(quarantine_target))
        gate_results = run_gate(store, "validated_conversations", target, batch)
    return _validated_result(store, batch, counts, tally, set_aside, gate_results)


def _validated_result(
    store: Lake,
    batch: str,
    counts: tuple[int, int, int],
    tally: "_ValidationTally",
    set_aside: pl.DataFrame,
    gate_results: list[AssetCheckResult],
) -> MaterializeResult:
    """The layer's metadata and checks; `counts`: raw, validated and quarantined rows."""
    raw_rows, validated, quarantined = counts
    target = store.layer_path("validated", batch)
    return MaterializeResult(
        metadata={
            **layer_table(target, validated),
            "quarantined": quarantined,
            "raw_rows": raw_rows,
            **tally.metadata(set_aside),
            "path": path_value(target),
            "quarantine_path": path_value(store.layer_path("quarantine", batch)),
            **tally.previews(),
        },
        check_results=[
            rows_conserved(
                "raw_rows_conserved",
                ("raw", raw_rows),
                ("validated", validated),
                ("quarantined", quarantined),
            ),
            *gate_results,
        ],
    )


@dataclass
class _ValidationTally:
    """What the validation of a raw layer found, chunk after chunk."""

    rules: Counter[str] = field(default_factory=Counter)
    batch_identities: list[pl.DataFrame] = field(default_factory=list)
    raw_rows: int = 0
    preview_valid: pl.DataFrame | None = None
    preview_rejected: list[dict] = field(default_factory=list)

    def add(self, valid_table: pa.Table, rejected: pl.DataFrame, raw_rows: int) -> None:
        self.batch_identities.append(pl.from_arrow(valid_table.select(BATCH_COLUMNS)))  # type: ignore[arg-type]
        for rule_list in rejected["rules"].to_list():
            self.rules.update(rule_list)
        if len(self.preview_rejected) < 5:
            self.preview_rejected.extend(rejected.head(5).to_dicts())
        if self.preview_valid is None and valid_table.num_rows:
            self.preview_valid = pl.from_arrow(valid_table.slice(0, 5))  # type: ignore[assignment]
        self.raw_rows += raw_rows

    def identities(self) -> pl.DataFrame:
        """The accepted records' identity columns, for the identity index."""
        if self.batch_identities:
            return pl.concat(self.batch_identities)
        return pl.from_arrow(VALIDATED_SCHEMA.empty_table()).select(BATCH_COLUMNS)  # type: ignore[union-attr]

    def metadata(self, set_aside: pl.DataFrame) -> dict[str, object]:
        outcomes = Counter(set_aside["outcome"].to_list())
        return {
            "duplicates": outcomes.get(DUPLICATE, 0),
            "id_conflicts": outcomes.get(ID_CONFLICT, 0),
            "superseded": outcomes.get(SUPERSEDED, 0),
            "quarantine_rules": MetadataValue.json(dict(self.rules.most_common())),
        }

    def previews(self) -> dict[str, object]:
        return {
            "preview": preview(
                self.preview_valid if self.preview_valid is not None else pl.DataFrame(),
                ["record_index", "conversation_id", "user_id", "tier", "created_at"],
            ),
            "quarantine_preview": preview(
                pl.DataFrame(self.preview_rejected[:5])
                if self.preview_rejected
                else pl.DataFrame(),
                ["record_index", "source_file", "position", "validation_errors"],
            ),
        }


def _validate_layer(
    lake: LakeResource,
    raw_path: Path,
    staged: tuple[Path, Path, Path],
    context: AssetExecutionContext,
) -> _ValidationTally:
    """Validate the raw layer row group by row group into the `staged` files (accepted
    rows, quarantined rows, status changes)."""
    # Only parsed records cost pydantic time; the rest are quarantined as they were read.
    workers = lake.worker_count if parsed_records(raw_path) > lake.chunk_rows else 1
    progress = ProgressLog(context.log)
    tally = _ValidationTally()
    staged_valid, staged_rejected, staged_changes = staged
    with (
        write_layer(staged_valid, VALIDATED_SCHEMA) as valid_out,
        write_layer(staged_rejected, QUARANTINE_SCHEMA) as rejected_out,
        write_layer(staged_changes, CHANGE_SCHEMA) as changes_out,
    ):
        for part in map_row_groups(validate_row_group, raw_path, workers):
            valid_table = loaded(part.valid)
            valid_out.write(valid_table)
            rejected_out.write(part.rejected)
            changes_out.write(change_rows(part.changes))
            tally.add(valid_table, part.rejected, part.raw_rows)
            progress(f"validated {tally.raw_rows} raw rows")
    return tally


def _apply_validation_statuses(
    store: Lake, batch: str, staged_changes: Path, set_aside: pl.DataFrame
) -> None:
    """The validation's status changes, the set-aside records' own in theirs' place."""
    if set_aside.height == 0:
        apply_staged_changes(store, batch, staged_changes, VALIDATION_CHANGES, datetime.now(UTC))
        return
    staged = pl.read_parquet(staged_changes, columns=["record_index", *VALIDATION_CHANGES])
    status_changes = _status_changes([staged], set_aside)
    if status_changes.height:
        apply_changes(store, batch, status_changes, datetime.now(UTC))
