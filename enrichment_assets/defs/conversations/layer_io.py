"""Reading and writing one layer of one partition, chunk by chunk.

Writers go to a temporary file beside the target and rename on close, so a
reader never sees half a partition and a crash leaves the previous one intact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from enrichment_assets.lake import Lake, atomic_path, hidden_temp
from enrichment_assets.locks import partition_lock
from enrichment_assets.workers import map_ordered, scratch_dir

T = TypeVar("T")


class LayerWriter:
    """Appends chunks (Arrow tables or Polars frames) to one Parquet file.

    Each chunk is encoded and compressed in a background thread while the caller
    prepares the next one (Arrow releases the GIL); one write is in flight at a time,
    and its error, if any, is raised by the next `write` or by `close`.
    """

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int | None = None) -> None:
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="layer-writer")
        self._pending: Future[None] | None = None
        self.schema = schema
        # Each write is a row group, or several of at most this many rows: the next layer
        # hands one row group to each of its tasks.
        self.row_group_rows = row_group_rows
        self.rows = 0

    def write(self, chunk: pa.Table | pl.DataFrame) -> None:
        table = chunk.to_arrow() if isinstance(chunk, pl.DataFrame) else chunk
        table = table.select(self.schema.names).cast(self.schema)
        self._wait()
        self._pending = self._thread.submit(
            self._writer.write_table, table, row_group_size=self.row_group_rows
        )
        self.rows += table.num_rows

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._thread.shutdown()
            self._writer.close()


@contextmanager
def staging_path(target: Path) -> Iterator[Path]:
    """A hidden temporary path beside `target` (never matching `*.parquet`), removed at exit.

    For a file built in steps before it replaces `target` (`os.replace`) or is read back.
    """
    path = hidden_temp(target, ".staging.tmp")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def partition_writer(
    lake: Lake, partition: str, run_id: str | None, log: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the partition's lock while a step writes its layers, statuses and exports.

    A second writer of the same partition (another command, the daemon, the UI) waits, and
    `log` says whom it waits for (see `locks`).
    """
    with partition_lock(
        lake.data_dir, partition, app_db_url=lake.app_db_url, owner=run_id, on_wait=log
    ):
        yield


@contextmanager
def write_layer(
    target: Path, schema: pa.Schema, row_group_rows: int | None = None
) -> Iterator[LayerWriter]:
    """Write a partition's layer file atomically; an empty layer is a valid file."""
    with atomic_path(target) as tmp:
        writer = LayerWriter(tmp, schema, row_group_rows)
        try:
            yield writer
        finally:
            writer.close()


def read_chunks(path: Path, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """Stream a layer file as Polars frames of at most `chunk_rows` rows.

    The next chunk is read (decompressed, decoded) in a background thread while the
    caller works on this one.
    """
    batches = pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as thread:
        upcoming = thread.submit(next, batches, None)
        while (batch := upcoming.result()) is not None:
            upcoming = thread.submit(next, batches, None)
            yield pl.from_arrow(pa.Table.from_batches([batch]))  # type: ignore[misc]


def row_count(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def empty_frame(path: Path) -> pl.DataFrame:
    """A layer file's columns with no rows, read from its footer alone."""
    return pl.from_arrow(pq.read_schema(path).empty_table())  # type: ignore[return-value]


def map_row_groups(
    task: Callable[[str, int, str | None], T], path: Path, workers: int
) -> Iterator[T]:
    """`task(path, row_group, scratch)` for each row group of a layer file, in order,
    over `workers` processes (the caller maps the tables a task left in `scratch` with
    `workers.loaded`)."""
    with scratch_dir(workers) as scratch:
        row_groups = pq.ParquetFile(path).num_row_groups
        tasks = [(str(path), row_group, scratch) for row_group in range(row_groups)]
        yield from map_ordered(task, tasks, workers)


def failed_ids(path: Path, id_column: str, error: pl.Expr) -> frozenset[str]:
    """Ids of the rows of a layer file (its previous materialization) whose `error` is
    set: the items that failed last time (none when the file does not exist yet)."""
    if not path.exists():
        return frozenset()
    try:
        failed = pl.scan_parquet(path).filter(error.is_not_null()).select(id_column).collect()
    except pl.exceptions.PolarsError:  # a file of another shape: nobody counts as failed
        return frozenset()
    return frozenset(failed.get_column(id_column).to_list())
