"""Summary windows: a UTC day's messages per user and window, in DuckDB, and their files.

The library side of the `conversation_summaries` asset
(`enrichment_assets/defs/summaries/assets.py`): the day's messages from every normalized
partition (`sql/conversation_summaries_*.sql`), cut into `window_hours` windows aligned to
the day; each (user_id, window) with at least `min_messages` messages is one
pseudo-conversation for the enricher, its id a uuid5 of (user_id, window_start).
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pyarrow.parquet as pq

from enrichment_assets import settings as env_settings
from enrichment_assets.enrichers.base import CONVERSATION_INPUT_SCHEMA, Enricher
from enrichment_assets.lake import HOST_TAG, Lake, atomic_path
from enrichment_assets.packing import chunk_bounds
from enrichment_assets.sql_files import load_sql

LAYER = "summaries"
# Rows a DuckDB thread buffers before it flushes the one-scan split of the messages into
# days (`scanned_days`). DuckDB's default (524,288) held every message of 100,000
# conversations (about 1 GB more) and grew with them; 20,000 keeps it about 0.5 GB at
# 1,000,000 conversations and costs no extra file.
DAYS_SCAN_FLUSH_ROWS = 20_000
# Messages of one enricher call over summary windows: about a layer chunk's (20,000
# conversations of about 12 messages each).
WINDOW_CHUNK_MESSAGES = 250_000
# Namespace of summary ids: uuid5(namespace, [user_id, window_start]).
SUMMARY_ID_NAMESPACE = uuid.UUID("4f0d5a52-6c2e-5b8e-9a51-3f1c7e2d8b60")

# The columns of the normalized layer the summaries read, for an empty lake.
_NORMALIZED_COLUMNS = {
    "partition": pl.String(),
    "conversation_id": pl.String(),
    "user_id": pl.String(),
    "persona_id": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "status": pl.String(),
    "messages": CONVERSATION_INPUT_SCHEMA["messages"],
}
# The columns of `summary_messages` (`sql/conversation_summaries_messages.sql`).
SUMMARY_MESSAGE_COLUMNS = (
    "partition",
    "conversation_id",
    "user_id",
    "persona_id",
    "ordinal",
    "role",
    "content",
    "message_at",
)
DayConnection = AbstractContextManager[duckdb.DuckDBPyConnection]


@dataclass(frozen=True)
class SummaryWindows:
    """Which user-windows get a summary (the asset's config, `SummaryWindowConfig`)."""

    min_messages: int
    window_hours: int

    def check(self) -> None:
        if self.min_messages < 1:
            raise ValueError(f"min_messages={self.min_messages}: expected at least 1")
        if self.window_hours < 1 or 24 % self.window_hours:
            raise ValueError(
                f"window_hours={self.window_hours}: expected a divisor of 24 "
                "(1, 2, 3, 4, 6, 8, 12 or 24) so that windows tile the day"
            )


def default_windows() -> SummaryWindows:
    """`ENRICH_SUMMARIES_MIN_MESSAGES` and `ENRICH_SUMMARIES_WINDOW_HOURS`, else 5 and 24."""
    return SummaryWindows(
        min_messages=env_settings.whole_number("ENRICH_SUMMARIES_MIN_MESSAGES", 5),
        window_hours=env_settings.whole_number("ENRICH_SUMMARIES_WINDOW_HOURS", 24),
    )


def summary_id(user_id: str, window_start: datetime) -> str:
    """The deterministic id of one user-window (also its pseudo-conversation id)."""
    key = orjson.dumps([user_id, window_start.astimezone(UTC).isoformat()])
    return str(uuid.uuid5(SUMMARY_ID_NAMESPACE, key.decode()))


def summaries_path(lake: Lake, day: str) -> Path:
    return lake.layer_path(LAYER, day)


def summaries_export_path(lake: Lake, day: str) -> Path:
    return lake.export_path(LAYER, day)


def day_start(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)


def summary_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that computes in UTC (day and window bounds are UTC)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _status_file(normalized_file: str) -> str:
    """The status file of the partition a normalized file belongs to (same lake, same name)."""
    path = Path(normalized_file)
    return str(path.parent.parent / "status" / path.name)


def register_normalized(con: duckdb.DuckDBPyConnection, files: str | list[str]) -> None:
    """Expose normalized Parquet (a glob or files) as `normalized_conversations` and
    `summary_messages`; nothing is read until a query runs, and then only its columns.

    Only the current version of each conversation counts: a record whose status is no
    longer `completed` (superseded by a newer version since) is left out.
    """
    matched = glob.glob(files) if isinstance(files, str) else [f for f in files if Path(f).exists()]
    statuses = [s for s in map(_status_file, matched) if Path(s).exists()]
    if matched and statuses:
        current = (
            con.read_parquet(statuses, union_by_name=True)
            .filter("status::VARCHAR = 'completed'")
            .select("partition, record_index")
        )
        con.read_parquet(matched, union_by_name=True).join(
            current, "partition, record_index", how="semi"
        ).select(", ".join(_NORMALIZED_COLUMNS)).create_view("normalized_conversations")
    else:
        con.register("normalized_conversations", pl.DataFrame(schema=_NORMALIZED_COLUMNS))
    con.execute(load_sql("conversation_summaries_messages"))


def user_windows(con: duckdb.DuckDBPyConnection, day: str, config: SummaryWindows) -> pl.DataFrame:
    """The day's user-windows worth a summary, each with its id and messages."""
    windows = con.sql(
        load_sql("conversation_summaries_windows"),
        params={
            "day_start": day_start(day),
            "window_hours": config.window_hours,
            "min_messages": config.min_messages,
        },
    ).pl()
    ids = [
        summary_id(user, start) for user, start in windows.select("user_id", "window_start").rows()
    ]
    return windows.with_columns(pl.Series("summary_id", ids, dtype=pl.String()))


def annotate_windows(windows: pl.DataFrame, enricher: Enricher, chunk_rows: int) -> pl.DataFrame:
    """Enricher annotations of each user-window, fed as a CONVERSATION_INPUT_SCHEMA frame,
    in chunks of at most `chunk_rows` windows and about WINDOW_CHUNK_MESSAGES messages (a
    day has few windows, but each holds all its user's messages of the window: chunking by
    windows alone put a whole day of 1,000,000 conversations in one call, 4.7 GB)."""
    conversations = windows.select(
        pl.col("summary_id").alias("conversation_id"),
        pl.col("messages").cast(CONVERSATION_INPUT_SCHEMA["messages"]),
    )
    sizes = conversations.get_column("messages").list.len().fill_null(0).to_list()
    chunks = [
        enricher.annotate(conversations.slice(start, end - start))
        for start, end in chunk_bounds(sizes, chunk_rows, WINDOW_CHUNK_MESSAGES)
    ]
    return pl.concat(chunks, how="vertical_relaxed")


@contextmanager
def scanned_days(lake: Lake, days: list[str]) -> Iterator[Callable[[str], DayConnection]]:
    """Read the messages of these UTC days from every normalized partition in ONE scan, into
    one Parquet folder per day (a private scratch folder, removed afterwards); yields
    `open_day(day)`: a summary connection whose `summary_messages` holds that day only (its
    fingerprint and its windows read them there). Memory follows DuckDB's streaming write,
    not the number of days."""
    folder = Path(tempfile.mkdtemp(prefix=f"enrich-{HOST_TAG}-{os.getpid()}-summary-days-"))
    try:
        con = summary_connection()
        try:
            register_normalized(con, lake.layer_glob("normalized"))
            con.execute(f"SET partitioned_write_flush_threshold = {DAYS_SCAN_FLUSH_ROWS}")
            con.execute(
                load_sql("conversation_summaries_days_scan"),
                {"days": sorted(set(days)), "folder": str(folder)},
            )
        finally:
            con.close()
        yield lambda day: _day_connection(folder, day)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _day_connection(folder: Path, day: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """`summary_messages` of one day written by `scanned_days` (none: an empty view)."""
    con = summary_connection()
    try:
        files = sorted(glob.glob(str(folder / f"day={day}" / "*.parquet")))
        if files:
            con.read_parquet(files, hive_partitioning=False).select(
                ", ".join(SUMMARY_MESSAGE_COLUMNS)
            ).create_view("summary_messages")
        else:
            register_normalized(con, [])
        yield con
    finally:
        con.close()


def summarize_day(
    con: duckdb.DuckDBPyConnection,
    day: str,
    config: SummaryWindows,
    enricher: Enricher,
    *,
    generated_at: datetime,
    chunk_rows: int = 20_000,
) -> pl.DataFrame:
    """The summaries of one UTC day (a connection of `scanned_days`) over every normalized
    partition (not yet written)."""
    windows = user_windows(con, day, config)
    annotations = annotate_windows(windows, enricher, chunk_rows)
    con.register("summary_windows", windows.drop("messages"))
    con.register("summary_annotations", annotations)
    return con.sql(
        load_sql("conversation_summaries"),
        params={
            "day": day,
            "min_messages": config.min_messages,
            "window_hours": config.window_hours,
            "generated_at": generated_at,
        },
    ).pl()


def write_summaries_export(lake: Lake, day: str) -> Path | None:
    """Replace `export/summaries/<day>.jsonl` atomically from the day's Parquet file; a day
    without a summary has no export file (an earlier one is removed): None."""
    target = summaries_export_path(lake, day)
    if pq.ParquetFile(summaries_path(lake, day)).metadata.num_rows == 0:
        target.unlink(missing_ok=True)
        return None
    con = summary_connection()
    try:
        con.execute(load_sql("macros"))
        with atomic_path(target) as tmp:
            con.execute(
                load_sql("conversation_summaries_export"),
                [str(summaries_path(lake, day)), str(tmp)],
            )
    finally:
        con.close()
    return target
