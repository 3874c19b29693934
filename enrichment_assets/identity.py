"""One identity per conversation across the lake: duplicates, id conflicts, versions.

Every batch partition records the first occurrence of each conversation id it holds
(its id, a hash of its canonical content, where it sits and when its batch landed) in
the identity index. From the index, set-based in DuckDB (`sql/identity_*.sql`):

- within a batch, the first valid occurrence of an id is processed; an exact repeat is a
  `duplicate` of it, other content under the same id an `id_conflict`;
- across batches, the newest landed version of an id wins: content already in the lake
  is a `duplicate` of the record that carries it (never enriched nor exported again), and
  an older version is `superseded` once a newer one has landed: it leaves the exports.

The index lives in the lake, one Parquet file per partition (`lake/identity/<batch>.parquet`),
written under the identity lock so that two partitions registering at once see each
other. Readers never need the lock: each file is replaced atomically.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from enrichment_assets.lake import Lake, atomic_path
from enrichment_assets.locks import IDENTITY_LOCK, file_lock
from enrichment_assets.sql_files import load_sql

# Outcomes of records set aside; each is also the conversation's status.
DUPLICATE, ID_CONFLICT, SUPERSEDED = "duplicate", "id_conflict", "superseded"
SET_ASIDE = (DUPLICATE, ID_CONFLICT, SUPERSEDED)

IDENTITY_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.string()),
        pa.field("record_index", pa.int64()),
        pa.field("conversation_id", pa.string()),
        pa.field("record_hash", pa.string()),
        pa.field("landed_at", pa.timestamp("us", tz="UTC")),
        pa.field("source_file", pa.string()),
        pa.field("position", pa.int64()),
    ]
)
# The batch's own rows, as the validated layer has them.
BATCH_COLUMNS = ("record_index", "conversation_id", "record_hash", "source_file", "position")

RESOLUTION_SCHEMA: dict[str, pl.DataType] = {
    "record_index": pl.Int64(),
    "outcome": pl.String(),
    "kept_partition": pl.String(),
    "kept_record_index": pl.Int64(),
    "kept_source_file": pl.String(),
    "kept_position": pl.Int64(),
}


@dataclass(frozen=True)
class StaleRows:
    """Records that are not the current version of their id, among one partition's ids."""

    own: list[int]  # record indexes of the partition itself (never exported by it)
    elsewhere: dict[str, list[int]]  # other partitions' records that it replaced


def set_aside_reason(row: dict[str, Any]) -> str:
    """One line for a set-aside record's `last_error`: what it is, and what was kept."""
    kept = (
        f"record {row['kept_record_index']} ({row['kept_source_file']}:{row['kept_position']}) "
        f"of partition {row['kept_partition']}"
    )
    if row["outcome"] == DUPLICATE:
        return f"duplicate: the same conversation as {kept}, which is kept"
    if row["outcome"] == ID_CONFLICT:
        return f"id_conflict: another conversation under the id of {kept}, which is kept"
    return f"superseded: a newer version is {kept}"


class IdentityIndex:
    """The identity index of a lake, kept in the lake (see the module docstring).

    `PostgresIdentityIndex` keeps the same rows in the application database; the
    decisions (`resolve_and_register`, `stale_rows`, `versions`) are the same SQL in DuckDB
    over whichever rows the backend returns.
    """

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    # -- storage: the lake's files (overridden by the PostgreSQL backend) -------------------
    @property
    def folder(self) -> Path:
        return self.lake.data_dir / "lake" / "identity"

    def path(self, partition: str) -> Path:
        return self.folder / f"{partition}.parquet"

    @contextmanager
    def registering(self, owner: str | None = None) -> Iterator[None]:
        """The identity lock: resolve and register one partition at a time."""
        with file_lock(self.lake.data_dir, IDENTITY_LOCK, owner=owner):
            yield

    def rows_for(self, ids: pa.Array, exclude: str | None = None) -> pa.Table:
        """Index rows of every partition (but `exclude`) for these conversation ids."""
        files = sorted(glob.glob(str(self.folder / "*.parquet")))
        if exclude is not None:
            files = [f for f in files if Path(f).name != f"{exclude}.parquet"]
        if not files or len(ids) == 0:
            return IDENTITY_SCHEMA.empty_table()
        with _connection() as con:
            con.register("wanted_ids", pa.table({"conversation_id": ids}))
            return con.sql(
                "SELECT * FROM read_parquet($files) "
                "WHERE conversation_id IN (SELECT conversation_id FROM wanted_ids)",
                params={"files": files},
            ).to_arrow_table()

    def partition_ids(self, partition: str) -> pa.Array | None:
        """The ids a partition registered, or None when it registered none yet."""
        path = self.path(partition)
        if not path.exists():
            return None
        return pq.read_table(path, columns=["conversation_id"])["conversation_id"].combine_chunks()

    def replace(self, partition: str, rows: pa.Table) -> None:
        """Make `rows` the partition's entries (called under `registering`)."""
        with atomic_path(self.path(partition)) as tmp:
            pq.write_table(rows, tmp, compression="zstd")

    # -- decisions, the same for every backend ---------------------------------------------
    def resolve_and_register(
        self,
        partition: str,
        landed_at: datetime,
        batch: pl.DataFrame,
        *,
        owner: str | None = None,
    ) -> pl.DataFrame:
        """Decide which of the batch's valid records are set aside, and register the rest.

        `batch` holds BATCH_COLUMNS for every valid record of `partition`. Returns the
        set-aside records (RESOLUTION_SCHEMA); the others are processed. Under the lock,
        the partition's first occurrences replace its entries in the index.
        """
        batch = batch.select(BATCH_COLUMNS).sort("record_index")
        mine = (
            batch.unique("conversation_id", keep="first", maintain_order=True)
            .with_columns(
                pl.lit(partition).alias("partition"),
                pl.lit(landed_at).cast(pl.Datetime("us", "UTC")).alias("landed_at"),
            )
            .select(IDENTITY_SCHEMA.names)
            .to_arrow()
            .cast(IDENTITY_SCHEMA)
        )
        with self.registering(owner):
            others = self.rows_for(mine["conversation_id"].combine_chunks(), exclude=partition)
            with _connection() as con:
                con.register("batch_rows", batch.to_arrow())
                con.register(
                    "identity_rows", pa.concat_tables([mine, others.cast(IDENTITY_SCHEMA)])
                )
                con.execute(load_sql("identity_versions"))
                resolved = con.sql(
                    load_sql("identity_resolve"), params={"partition": partition}
                ).pl()
            self.replace(partition, mine)
        if resolved.height == 0:
            return pl.DataFrame(schema=RESOLUTION_SCHEMA)
        return resolved.cast(RESOLUTION_SCHEMA)  # type: ignore[arg-type]

    def stale_rows(self, partition: str) -> StaleRows:
        """Which records are not current among the ids of `partition` (see StaleRows)."""
        ids = self.partition_ids(partition)
        if ids is None:
            return StaleRows(own=[], elsewhere={})
        with _connection() as con:
            con.register("identity_rows", self.rows_for(ids).cast(IDENTITY_SCHEMA))
            con.execute(load_sql("identity_versions"))
            rows = con.execute(load_sql("identity_stale_rows"), {"partition": partition}).fetchall()
        own: list[int] = []
        elsewhere: dict[str, list[int]] = {}
        for row_partition, record_index, _, _, _ in rows:
            if row_partition == partition:
                own.append(record_index)
            else:
                elsewhere.setdefault(row_partition, []).append(record_index)
        return StaleRows(own=own, elsewhere=elsewhere)

    def versions(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every occurrence of an id across the lake, oldest landed first, with the current
        version and the first occurrence of each content marked."""
        found = self.rows_for(pa.array([conversation_id], pa.string()))
        if found.num_rows == 0:
            return []
        with _connection() as con:
            con.register("identity_rows", found.cast(IDENTITY_SCHEMA))
            con.execute(load_sql("identity_versions"))
            rows = con.execute(
                "SELECT r.partition, r.record_index, r.record_hash, r.landed_at, "
                "r.source_file, r.position, "
                "(r.partition, r.record_index) = (c.partition, c.record_index) AS current, "
                "(r.partition, r.record_index) = (f.partition, f.record_index) AS first "
                "FROM identity_rows r "
                "JOIN identity_current c USING (conversation_id) "
                "JOIN identity_first_occurrence f "
                "ON f.conversation_id = r.conversation_id AND f.record_hash = r.record_hash "
                "ORDER BY r.landed_at, r.partition, r.record_index"
            ).fetchall()
        return [
            {
                "partition": partition,
                "record_index": record_index,
                "content_hash": record_hash,
                "landed_at": landed_at.isoformat() if landed_at is not None else None,
                "source_file": source_file,
                "position": position,
                "current": bool(current),
                "version": "new content" if first else "repeat of an earlier version",
            }
            for (
                partition,
                record_index,
                record_hash,
                landed_at,
                source_file,
                position,
                current,
                first,
            ) in rows
        ]


class PostgresIdentityIndex(IdentityIndex):
    """The same index in the application database (`conversation_versions`), shared by
    workers on any number of machines; registration under a PostgreSQL advisory lock."""

    def __init__(self, lake: Lake, url: str) -> None:
        super().__init__(lake)
        self.url = url

    @contextmanager
    def registering(self, owner: str | None = None) -> Iterator[None]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [IDENTITY_LOCK])
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [IDENTITY_LOCK])

    def rows_for(self, ids: pa.Array, exclude: str | None = None) -> pa.Table:
        import psycopg

        if len(ids) == 0:
            return IDENTITY_SCHEMA.empty_table()
        with psycopg.connect(self.url) as conn:
            conn.execute("CREATE TEMP TABLE wanted_ids (conversation_id text) ON COMMIT DROP")
            with conn.cursor().copy("COPY wanted_ids (conversation_id) FROM STDIN") as copy:
                for value in ids.to_pylist():
                    copy.write_row((value,))
            rows = conn.execute(
                "SELECT v.partition, v.record_index, v.conversation_id, v.record_hash, "
                "v.landed_at, v.source_file, v.position FROM conversation_versions v "
                "WHERE v.conversation_id IN (SELECT conversation_id FROM wanted_ids) "
                "AND v.partition IS DISTINCT FROM %s",
                [exclude],
            ).fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in IDENTITY_SCHEMA]
        return pa.table(
            {
                f.name: pa.array(list(c), f.type)
                for f, c in zip(IDENTITY_SCHEMA, columns, strict=True)
            }
        )

    def partition_ids(self, partition: str) -> pa.Array | None:
        import psycopg

        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT conversation_id FROM conversation_versions WHERE partition = %s",
                [partition],
            ).fetchall()
        return pa.array([r[0] for r in rows], pa.string()) if rows else None

    def replace(self, partition: str, rows: pa.Table) -> None:
        import psycopg

        with psycopg.connect(self.url) as conn, conn.transaction():
            conn.execute("DELETE FROM conversation_versions WHERE partition = %s", [partition])
            with conn.cursor().copy(
                "COPY conversation_versions (partition, record_index, conversation_id, "
                "record_hash, landed_at, source_file, position) FROM STDIN"
            ) as copy:
                for row in rows.select(IDENTITY_SCHEMA.names).to_pylist():
                    copy.write_row(tuple(row.values()))


def identity_index(lake: Lake, app_db_url: str | None = None) -> IdentityIndex:
    """The index of this deployment: the application database's when one is configured."""
    return PostgresIdentityIndex(lake, app_db_url) if app_db_url else IdentityIndex(lake)


@contextmanager
def _connection() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        yield con
    finally:
        con.close()
