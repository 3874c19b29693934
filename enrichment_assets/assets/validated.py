"""`validated_conversations`: the records that satisfy the contract; the rest quarantined."""

from collections import Counter
from datetime import UTC, datetime

import orjson
import polars as pl
import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from enrichment_assets.assets.layer_io import read_chunks, row_count, write_layer
from enrichment_assets.assets.metadata import path_value, preview
from enrichment_assets.assets.raw import raw_conversations
from enrichment_assets.checks.gx_suites import gate_specs, run_gate
from enrichment_assets.contract import (
    CANONICAL_KEYS,
    ROLE_ALIASES,
    Conversation,
    Rejection,
    is_valid,
    validate_records,
)
from enrichment_assets.partitions import batch_partitions
from enrichment_assets.resources import LakeResource
from enrichment_assets.status import apply_changes

UTC_TS = pa.timestamp("us", tz="UTC")
MESSAGE_TYPE = pa.struct(
    [
        pa.field("role", pa.string()),
        pa.field("content", pa.string()),
        pa.field("timestamp", UTC_TS),
    ]
)
# Where a record came from; carried by every later layer.
LINEAGE_FIELDS = [
    pa.field("partition", pa.string()),
    pa.field("record_index", pa.int64()),
    pa.field("source_file", pa.string()),
    pa.field("position", pa.int64()),
    pa.field("content_hash", pa.string()),
]
VALIDATED_SCHEMA = pa.schema(
    [
        *LINEAGE_FIELDS,
        pa.field("conversation_id", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("template_id", pa.string()),
        pa.field("persona_id", pa.string()),
        pa.field("emotional_arc_id", pa.string()),
        pa.field("training_topic_id", pa.string()),
        pa.field("tier", pa.string()),
        pa.field("created_at", UTC_TS),
        pa.field("messages", pa.list_(MESSAGE_TYPE)),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        *LINEAGE_FIELDS,
        pa.field("conversation_id", pa.string()),
        pa.field("raw_text", pa.string()),
        # The machine-readable report: a JSON list of {rule, path, value}.
        pa.field("validation_errors", pa.string()),
        pa.field("rules", pa.list_(pa.string())),
    ]
)
# The canonical fields stored as text (ids and tier): the contract's, in its order.
_SCALAR_FIELDS = tuple(
    k for k in CANONICAL_KEYS if k not in ("conversation_id", "created_at", "messages")
)


def conversations_table(lineage: pl.DataFrame, conversations: list[Conversation]) -> pa.Table:
    """Arrow rows of validated conversations; messages built flat, then offset.

    Roles are mapped onto the canonical set column-wise; timestamps become UTC
    instants (naive ones are taken as UTC) in the Arrow conversion.
    """
    offsets = [0]
    roles: list[str] = []
    contents: list[str] = []
    stamps: list[datetime | None] = []
    for conversation in conversations:
        for message in conversation["messages"]:
            roles.append(message["role"])
            contents.append(message["content"])
            stamps.append(message.get("timestamp"))
        offsets.append(len(roles))
    canonical = (
        pl.Series(roles, dtype=pl.String)
        .str.strip_chars()
        .str.to_lowercase()
        .replace_strict(ROLE_ALIASES, return_dtype=pl.String)
    )
    messages = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [
                canonical.to_arrow().cast(pa.string()),
                pa.array(contents, pa.string()),
                pa.array(stamps, UTC_TS),
            ],
            fields=list(MESSAGE_TYPE),
        ),
    )
    columns = {name: lineage[name].to_arrow() for name in lineage.columns}
    columns["conversation_id"] = pa.array([str(c["conversation_id"]) for c in conversations])
    for name in _SCALAR_FIELDS:
        columns[name] = pa.array([c.get(name) for c in conversations], pa.string())
    columns["created_at"] = pa.array([c.get("created_at") for c in conversations], UTC_TS)
    columns["messages"] = messages
    return pa.table(columns).select(VALIDATED_SCHEMA.names).cast(VALIDATED_SCHEMA)


def _parse_error_report(parse_error: str) -> list[dict]:
    return [{"rule": "invalid_json", "path": "$", "value": parse_error}]


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
    content, parseable timestamps, tier in its set when given. Each chunk is
    validated in one call. Every other record goes to the quarantine table with
    a machine-readable report: a list of `{rule, path, value}`.
    """
    store = lake.lake
    batch = context.partition_key
    raw_path = store.layer_path("raw", batch)
    target = store.layer_path("validated", batch)
    quarantine_target = store.layer_path("quarantine", batch)
    rules: Counter[str] = Counter()
    changes: list[pl.DataFrame] = []
    preview_valid: pl.DataFrame | None = None
    preview_rejected: list[dict] = []
    raw_rows = 0
    lineage_cols = [f.name for f in LINEAGE_FIELDS]
    with (
        write_layer(target, VALIDATED_SCHEMA) as valid_out,
        write_layer(quarantine_target, QUARANTINE_SCHEMA) as rejected_out,
    ):
        for chunk in read_chunks(raw_path, lake.chunk_rows):
            raw_rows += chunk.height
            parsed = chunk.filter(pl.col("record_json").is_not_null())
            results = validate_records([s.encode() for s in parsed["record_json"].to_list()])
            valid_mask = pl.Series([is_valid(r) for r in results], dtype=pl.Boolean)
            valid_rows = parsed.filter(valid_mask)
            valid_models = [r for r in results if not isinstance(r, Rejection)]
            valid_table = conversations_table(valid_rows.select(lineage_cols), valid_models)
            valid_out.write(valid_table)

            reports = [
                [issue.model_dump(mode="json") for issue in r.issues]
                for r in results
                if isinstance(r, Rejection)
            ]
            rejected = pl.concat(
                [
                    parsed.filter(~valid_mask).with_columns(
                        pl.Series("report", [orjson.dumps(r).decode() for r in reports], pl.String)
                    ),
                    chunk.filter(pl.col("record_json").is_null()).with_columns(
                        pl.col("parse_error")
                        .map_elements(
                            lambda e: orjson.dumps(_parse_error_report(e)).decode(),
                            return_dtype=pl.String,
                        )
                        .alias("report")
                    ),
                ]
            ).sort("record_index")
            rejected = rejected.with_columns(
                pl.col("report").alias("validation_errors"),
                pl.col("report")
                .map_elements(
                    lambda r: [i["rule"] for i in orjson.loads(r)],
                    return_dtype=pl.List(pl.String),
                )
                .alias("rules"),
            )
            rejected_out.write(rejected.select(QUARANTINE_SCHEMA.names))
            for rule_list in rejected["rules"].to_list():
                rules.update(rule_list)
            if len(preview_rejected) < 5:
                preview_rejected.extend(rejected.head(5).to_dicts())
            if preview_valid is None and valid_table.num_rows:
                preview_valid = pl.from_arrow(valid_table)  # type: ignore[assignment]

            now = datetime.now(UTC)
            changes.append(
                pl.concat(
                    [
                        valid_rows.select("record_index").with_columns(
                            pl.lit("validated").alias("status"),
                            pl.lit(None, pl.String).alias("last_error"),
                        ),
                        rejected.select(
                            "record_index",
                            pl.lit("validation_failed").alias("status"),
                            pl.col("rules").list.join(", ").alias("last_error"),
                        ),
                    ]
                ).with_columns(pl.lit(now).alias("last_attempt"))
            )
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
