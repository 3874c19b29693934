"""The validated layer's chunk work: the contract applied to one row group of the raw layer.

Runs in a worker process (see `workers`), so this module must not import Dagster.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from enrichment_assets.contract import (
    CANONICAL_KEYS,
    ROLE_ALIASES,
    Conversation,
    Rejection,
    is_valid,
    validate_records,
)
from enrichment_assets.workers import SharedTable, gc_paused, share

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
        # sha256 of the record in its canonical shape: what "the same conversation" means
        # for the identity index (`identity.py`), whatever the file's layout or whitespace.
        pa.field("record_hash", pa.string()),
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
        # For a record set aside as a duplicate, an id conflict or a superseded version:
        # the record that was kept instead (NULL for a validation failure).
        pa.field("kept_partition", pa.string()),
        pa.field("kept_record_index", pa.int64()),
        pa.field("kept_source_file", pa.string()),
        pa.field("kept_position", pa.int64()),
    ]
)
# The canonical fields stored as text (ids and tier): the contract's, in its order.
_SCALAR_FIELDS = tuple(
    k for k in CANONICAL_KEYS if k not in ("conversation_id", "created_at", "messages")
)


def conversations_table(
    lineage: pl.DataFrame, conversations: list[Conversation], record_hashes: list[str]
) -> pa.Table:
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
    columns["record_hash"] = pa.array(record_hashes, pa.string())
    columns["conversation_id"] = pa.array([str(c["conversation_id"]) for c in conversations])
    for name in _SCALAR_FIELDS:
        columns[name] = pa.array([c.get(name) for c in conversations], pa.string())
    columns["created_at"] = pa.array([c.get("created_at") for c in conversations], UTC_TS)
    columns["messages"] = messages
    return pa.table(columns).select(VALIDATED_SCHEMA.names).cast(VALIDATED_SCHEMA)


def _parse_error_report(parse_error: str, parse_rule: str | None) -> str:
    """The report of a raw row that is no record: its line's, file's or limit's rule."""
    return orjson.dumps(
        [{"rule": parse_rule or "invalid_json", "path": "$", "value": parse_error}]
    ).decode()


# The raw columns validation reads; raw_text only for the rejected rows' quarantine entry.
_RAW_COLUMNS = [f.name for f in LINEAGE_FIELDS] + [
    "conversation_id",
    "record_json",
    "parse_error",
    "parse_rule",
]


@dataclass(frozen=True)
class ValidatedChunk:
    """One raw row group, validated: the accepted rows, the quarantined ones, the status changes."""

    raw_rows: int
    valid: pa.Table | SharedTable  # VALIDATED_SCHEMA
    rejected: pl.DataFrame  # QUARANTINE_SCHEMA
    changes: pl.DataFrame  # record_index, status, last_error, last_attempt


def validate_row_group(raw_path: str, row_group: int, scratch: str | None) -> ValidatedChunk:
    """Validate row group `row_group` of a raw layer file; each chunk in one pydantic call.

    With a `scratch` folder the accepted rows are left there (`SharedTable`), for a
    worker process to hand them back without a copy.
    """
    with gc_paused():
        return _validate_row_group(raw_path, row_group, scratch)


def _validate_row_group(raw_path: str, row_group: int, scratch: str | None) -> ValidatedChunk:
    raw = pq.ParquetFile(raw_path)
    chunk: pl.DataFrame = pl.from_arrow(  # type: ignore[assignment]
        raw.read_row_group(row_group, columns=_RAW_COLUMNS)
    )
    parsed = chunk.filter(pl.col("record_json").is_not_null())
    record_jsons = [s.encode() for s in parsed["record_json"].to_list()]
    results = validate_records(record_jsons)
    valid_mask = pl.Series([is_valid(r) for r in results], dtype=pl.Boolean)
    valid_rows = parsed.filter(valid_mask)
    valid_models = [r for r in results if not isinstance(r, Rejection)]
    hashes = [
        hashlib.sha256(data).hexdigest()
        for data, result in zip(record_jsons, results, strict=True)
        if not isinstance(result, Rejection)
    ]
    del record_jsons
    lineage = valid_rows.select([f.name for f in LINEAGE_FIELDS])
    valid_table = conversations_table(lineage, valid_models, hashes)
    reports = [
        orjson.dumps([issue.model_dump(mode="json") for issue in r.issues]).decode()
        for r in results
        if isinstance(r, Rejection)
    ]
    del results, valid_models
    rejected = _quarantine_rows(
        parsed.filter(~valid_mask).with_columns(pl.Series("report", reports, pl.String)),
        chunk,
        raw,
        row_group,
    )
    return ValidatedChunk(
        raw_rows=chunk.height,
        valid=share(valid_table, scratch),
        rejected=rejected,
        changes=_status_changes(valid_rows, rejected),
    )


def _quarantine_rows(
    invalid: pl.DataFrame, chunk: pl.DataFrame, raw: pq.ParquetFile, row_group: int
) -> pl.DataFrame:
    """The chunk's quarantine rows (QUARANTINE_SCHEMA), in record order: the `invalid`
    records (with their `report`) and the raw rows that hold no record."""
    rejected = pl.concat(
        [
            invalid,
            chunk.filter(pl.col("record_json").is_null()).with_columns(
                pl.struct("parse_error", "parse_rule")
                .map_elements(
                    lambda row: _parse_error_report(row["parse_error"], row["parse_rule"]),
                    return_dtype=pl.String,
                )
                .alias("report")
            ),
        ]
    ).sort("record_index")
    if rejected.height:
        raw_text = pl.from_arrow(raw.read_row_group(row_group, columns=["raw_text"]))
        rejected = rejected.join(
            chunk.select("record_index").with_columns(raw_text["raw_text"]),  # type: ignore[index]
            on="record_index",
            how="left",
            maintain_order="left",
        )
    else:
        rejected = rejected.with_columns(pl.lit(None, pl.String).alias("raw_text"))
    return rejected.with_columns(
        pl.col("report").alias("validation_errors"),
        pl.col("report")
        .map_elements(
            lambda r: [i["rule"] for i in orjson.loads(r)],
            return_dtype=pl.List(pl.String),
        )
        .alias("rules"),
        pl.lit(None, pl.String).alias("kept_partition"),
        pl.lit(None, pl.Int64).alias("kept_record_index"),
        pl.lit(None, pl.String).alias("kept_source_file"),
        pl.lit(None, pl.Int64).alias("kept_position"),
    ).select(QUARANTINE_SCHEMA.names)


def _status_changes(valid_rows: pl.DataFrame, rejected: pl.DataFrame) -> pl.DataFrame:
    """The chunk's status changes: `validated`, or `validation_failed` with its rules."""
    return pl.concat(
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
    ).with_columns(pl.lit(datetime.now(UTC)).alias("last_attempt"))
