"""Publishing a partition's rows to the application database, all or nothing.

One transaction per partition: COPY the rows into a temporary staging table,
upsert them into the target (`INSERT ... ON CONFLICT DO UPDATE`), then delete
the target's rows of that partition that the staged rows no longer hold. A
failure or a killed process at any point rolls the whole partition back, so
readers see the previous publication or the new one, never half of one. The
statements live in `sql/postgres/publish/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import orjson
import polars as pl
import psycopg
from psycopg import sql

from enrichment_assets.sql_files import load_sql

if TYPE_CHECKING:
    pass

_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class PublishTarget:
    """A published table: its staging/merge/delete statements and staged columns."""

    table: str
    partition_column: str
    columns: tuple[str, ...]
    required: tuple[str, ...]


STATUS_TARGET = PublishTarget(
    table="conversation_status",
    partition_column="partition",
    columns=(
        "partition",
        "record_index",
        "conversation_id",
        "status",
        "retry_count",
        "last_attempt",
        "last_error",
        "raw_stored_at",
        "enriched_at",
        "updated_at",
    ),
    required=("partition", "record_index", "status", "updated_at"),
)

SUMMARIES_TARGET = PublishTarget(
    table="conversation_summaries",
    partition_column="day",
    columns=(
        "user_id",
        "window_start",
        "window_end",
        "day",
        "summary_id",
        "persona_id",
        "summary",
        "key_topics",
        "emotional_tone",
        "sentiment",
        "message_count",
        "conversation_count",
        "source_chars",
        "compression_ratio",
        "confidence",
        "enricher",
        "model",
        "prompt_version",
        "error",
        "generated_at",
    ),
    required=("user_id", "window_start", "day", "message_count"),
)


@dataclass(frozen=True)
class PublishResult:
    """What one partition's publication did (for asset metadata and logs)."""

    table: str
    partition: str
    rows: int
    upserted: int  # inserted or changed; unchanged rows are not rewritten
    deleted: int
    ignored_columns: tuple[str, ...] = ()


def publish_frame(
    url: str, target: PublishTarget, partition: str, frame: pl.DataFrame
) -> PublishResult:
    """Replace `partition` of `target.table` by `frame`, in one transaction."""
    missing = [c for c in target.required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"cannot publish {target.table} partition {partition!r}: missing columns {missing}"
        )
    columns = [c for c in target.columns if c in frame.columns]
    ignored = tuple(c for c in frame.columns if c not in target.columns)
    staged = _csv_ready(frame.select(columns)).write_csv().encode()
    copy_statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true)").format(
        sql.Identifier(f"{target.table}_staging"),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
    )
    with psycopg.connect(url) as conn, conn.transaction():
        # Two publications of the same partition queue up instead of interleaving.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            [f"{target.table}/{partition}"],
        )
        conn.execute(load_sql(f"postgres/publish/stage_{target.table}"))
        with conn.cursor().copy(copy_statement) as copy:
            view = memoryview(staged)
            for start in range(0, len(view), _COPY_CHUNK):
                copy.write(view[start : start + _COPY_CHUNK])
        upserted = conn.execute(load_sql(f"postgres/publish/merge_into_{target.table}")).rowcount
        deleted = conn.execute(
            load_sql(f"postgres/publish/delete_{target.table}_partition"),
            {"partition": partition},
        ).rowcount
    return PublishResult(target.table, partition, frame.height, upserted, deleted, ignored)


def publish_status(url: str, partition: str, frame: pl.DataFrame) -> PublishResult:
    """Publish a batch partition's status rows (the frame of `status.read_status`)."""
    partitions = frame["partition"].unique().to_list() if "partition" in frame.columns else []
    if any(p != partition for p in partitions):
        raise ValueError(f"status rows of partitions {partitions} given for {partition!r}")
    return publish_frame(url, STATUS_TARGET, partition, frame)


def publish_summaries(app_db_url: str, day: date | str, frame: pl.DataFrame) -> PublishResult:
    """Replace the summaries of daily partition `day` by `frame`, in one transaction.

    `frame` holds one row per (user_id, window_start) with any of the columns of
    `sql/postgres/0003_conversation_summaries.sql` (`day` is set from the
    argument; `topics` is taken as `key_topics`); list or struct columns are stored
    as JSON.
    Columns the table does not know are left out and named in the result.
    """
    day_value = date.fromisoformat(day) if isinstance(day, str) else day
    if "topics" in frame.columns and "key_topics" not in frame.columns:
        frame = frame.rename({"topics": "key_topics"})  # the asset's name for them
    frame = frame.with_columns(pl.lit(day_value).alias("day"))
    return publish_frame(app_db_url, SUMMARIES_TARGET, day_value.isoformat(), frame)


def _csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns COPY's CSV format reads back as they were: nested values as JSON,
    naive timestamps as UTC, enums as text."""
    converted = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.List | pl.Array | pl.Struct):
            converted.append(
                pl.col(name).map_elements(
                    lambda value: orjson.dumps(
                        value.to_list() if isinstance(value, pl.Series) else value
                    ).decode(),
                    return_dtype=pl.String,
                    skip_nulls=True,
                )
            )
        elif isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
            converted.append(pl.col(name).dt.replace_time_zone("UTC"))
        elif isinstance(dtype, pl.Enum | pl.Categorical):
            converted.append(pl.col(name).cast(pl.String))
    return frame.with_columns(converted) if converted else frame
