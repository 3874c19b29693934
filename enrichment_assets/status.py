"""Per-conversation status, kept as one Parquet file per batch partition.

Each layer moves its rows along the lifecycle of README, "Statuses" (`STATUSES`):
not_started → validated | validation_failed → enrichment_in_progress → enriched
→ completed | normalization_failed. A row is keyed by (partition, record_index):
the record's place in the frozen batch, which exists even when its id does not.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from enrichment_assets.contract import STATUSES
from enrichment_assets.lake import Lake, atomic_path
from enrichment_assets.sql_files import load_sql
from enrichment_assets.workers import release_memory

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

# What DuckDB may hold while it rewrites a status file (one range of record indexes at
# a time); past it, the join and the record-order sort spill to a temporary folder.
STATUS_SQL_MEMORY = "128MB"
# Record indexes per range of a status rewrite (`_write_query`), and DuckDB's threads for
# it: one range on one thread held 25-40 MiB at peak, 125,000 rows on two threads 100.
STATUS_RANGE_ROWS = 50_000
STATUS_SQL_THREADS = 1
# Columns a change may set; anything a change leaves out keeps its value.
_CHANGEABLE = ("status", "last_attempt", "last_error", "enriched_at", "retry_count")
# A change's columns as DuckDB reads them (the status as text: the file stores text).
_CHANGE_TYPES: dict[str, pl.DataType] = {
    **{c: STATUS_SCHEMA[c] for c in _CHANGEABLE},
    "status": pl.String(),
}
CHANGE_SCHEMA: pa.Schema = (
    pl.DataFrame(schema={"record_index": pl.Int64(), **{c: _CHANGE_TYPES[c] for c in _CHANGEABLE}})
    .to_arrow()
    .schema
)


def read_status(lake: Lake, batch: str) -> pl.DataFrame:
    path = lake.layer_path("status", batch)
    if not path.exists():
        return pl.DataFrame(schema=STATUS_SCHEMA)
    return pl.read_parquet(path).select(list(STATUS_SCHEMA)).cast(STATUS_SCHEMA)  # type: ignore[arg-type]


def write_status(lake: Lake, batch: str, frame: pl.DataFrame) -> None:
    """Replace the batch's status Parquet; then publish it to the application
    database when the lake has one (`Lake.app_db_url`), in one transaction."""
    frame = frame.select(list(STATUS_SCHEMA)).cast(STATUS_SCHEMA)
    with atomic_path(lake.layer_path("status", batch)) as tmp:
        frame.write_parquet(tmp)
    _publish(lake, batch)


def _publish(lake: Lake, batch: str) -> None:
    if lake.app_db_url is not None:
        from enrichment_assets.app_db import publish_status  # psycopg: only when configured

        publish_status(lake.app_db_url, batch, read_status(lake, batch))


def _write_query(
    lake: Lake,
    batch: str,
    query: str,
    tables: dict[str, pl.DataFrame | Path],
    parameters: dict,
    bounds: tuple[int, int] | None,
) -> None:
    """The batch's status Parquet replaced by `sql/<query>.sql` over `tables` (frames,
    or Parquet files read as they stream by): DuckDB streams the join to the file, so a
    million rows never become Python objects.

    The query runs over one range of `STATUS_RANGE_ROWS` record indexes at a time, from
    `bounds` (the first and last record index; None: no rows), and the ranges are
    appended to the file in order: DuckDB holds one range's join and sort, not the
    batch's (a million rows at once took 116-160 MiB above the process's steady state;
    ranges of 50,000 on one thread take 25-40).
    """
    with tempfile.TemporaryDirectory(prefix="enrich-status-") as spill:
        con = duckdb.connect(
            config={
                "memory_limit": STATUS_SQL_MEMORY,
                "threads": STATUS_SQL_THREADS,
                "temp_directory": spill,
            }
        )
        try:
            con.execute("SET TimeZone = 'UTC'")
            for name, table in tables.items():
                if isinstance(table, Path):
                    con.read_parquet(str(table)).create_view(name)
                else:
                    con.register(name, table.to_arrow())
            sql = load_sql(query)
            first, last = bounds if bounds is not None else (0, -1)
            starts = range(first, last + 1, STATUS_RANGE_ROWS) or range(0, 1)
            with atomic_path(lake.layer_path("status", batch)) as tmp:
                writer: pq.ParquetWriter | None = None
                for start in starts:
                    rows = con.sql(
                        sql,
                        params={
                            **parameters,
                            "range_start": start,
                            "range_end": start + STATUS_RANGE_ROWS,
                        },
                    ).to_arrow_table()
                    if writer is None:
                        writer = pq.ParquetWriter(str(tmp), rows.schema)
                    writer.write_table(rows)
                    del rows
                    release_memory()  # the range's buffers, before the next one
                if writer is not None:
                    writer.close()
        finally:
            con.close()
    release_memory()
    _publish(lake, batch)


def _index_bounds(frame: pl.DataFrame | Path) -> tuple[int, int] | None:
    """The first and last record index of a frame or Parquet file (None: no rows)."""
    source = pl.scan_parquet(frame) if isinstance(frame, Path) else frame.lazy()
    first, last = (
        source.select(pl.col("record_index").min().alias("a"), pl.col("record_index").max())
        .collect()
        .row(0)
    )
    return None if first is None else (int(first), int(last))


def register_records(
    lake: Lake, batch: str, records: pl.DataFrame, raw_stored_at: datetime
) -> None:
    """Start (or restart) the lifecycle of every raw record as `not_started`.

    The retry count survives a re-ingest of the same batch and counts attempts: a
    re-materialization is one more (it is how a run that died mid-enrichment, and
    left rows `enrichment_in_progress`, is recovered).
    """
    path = lake.layer_path("status", batch)
    previous = (
        pl.read_parquet(path, columns=["record_index", "retry_count"])
        if path.exists()
        else pl.DataFrame(schema={"record_index": pl.Int64(), "retry_count": pl.Int64()})
    )
    records = records.select("record_index", "conversation_id")
    _write_query(
        lake,
        batch,
        "status_register_records",
        {"records": records, "previous": previous},
        {"partition": batch, "stored_at": raw_stored_at},
        _index_bounds(records),
    )


def apply_changes(lake: Lake, batch: str, changes: pl.DataFrame, now: datetime) -> None:
    """Apply `changes` (record_index plus any of the changeable columns) to the batch.

    A row re-entering `enrichment_in_progress` from anything but `validated` (a
    scoped re-enrichment of a completed or failed conversation) is one more
    attempt: its retry count goes up, unless the change sets the count itself.
    """
    path = lake.layer_path("status", batch)
    if changes.height == 0 and path.exists():
        return  # nothing changes: the file stays as it is
    if not path.exists():  # no rows to change
        write_status(lake, batch, pl.DataFrame(schema=STATUS_SCHEMA))
        return
    present = [c for c in _CHANGEABLE if c in changes.columns]
    _apply(lake, batch, change_rows(changes), present, now)


def change_rows(changes: pl.DataFrame) -> pl.DataFrame:
    """`changes` with every changeable column (NULL where it sets none), typed
    `CHANGE_SCHEMA`: the rows `apply_staged_changes` reads from a file."""
    return changes.select(
        pl.col("record_index").cast(pl.Int64),
        *[
            (pl.col(c) if c in changes.columns else pl.lit(None)).cast(_CHANGE_TYPES[c]).alias(c)
            for c in _CHANGEABLE
        ],
    )


def apply_staged_changes(
    lake: Lake, batch: str, staged: Path, present: Sequence[str], now: datetime
) -> None:
    """`apply_changes` of the rows of a Parquet file of `change_rows` (written chunk by
    chunk by a layer), which set the columns `present`: a million changes are streamed
    from disk, never held."""
    path = lake.layer_path("status", batch)
    if pq.ParquetFile(staged).metadata.num_rows == 0 and path.exists():
        return
    if not path.exists():
        write_status(lake, batch, pl.DataFrame(schema=STATUS_SCHEMA))
        return
    _apply(lake, batch, staged, present, now)


def _apply(
    lake: Lake, batch: str, changes: pl.DataFrame | Path, present: Sequence[str], now: datetime
) -> None:
    # `$set_<column>` tells the columns the change sets from those filled with NULL.
    _write_query(
        lake,
        batch,
        "status_apply_changes",
        {"changes": changes},
        {f"set_{c}": c in present for c in _CHANGEABLE if c != "status"}
        | {"now": now, "status_path": str(lake.layer_path("status", batch))},
        _index_bounds(lake.layer_path("status", batch)),
    )


def status_counts(frame: pl.DataFrame) -> dict[str, int]:
    counts = dict(frame.group_by("status").len().iter_rows())
    return {status: int(counts.get(status, 0)) for status in STATUSES}
