"""Reading and writing one layer of one partition, chunk by chunk.

Writers go to a temporary file beside the target and rename on close, so a
reader never sees half a partition and a crash leaves the previous one intact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from enrichment_assets.lake import atomic_path


class LayerWriter:
    """Appends chunks (Arrow tables or Polars frames) to one Parquet file."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int | None = None) -> None:
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.schema = schema
        # Each write is a row group, or several of at most this many rows: the next layer
        # hands one row group to each of its tasks.
        self.row_group_rows = row_group_rows
        self.rows = 0

    def write(self, chunk: pa.Table | pl.DataFrame) -> None:
        table = chunk.to_arrow() if isinstance(chunk, pl.DataFrame) else chunk
        table = table.select(self.schema.names).cast(self.schema)
        self._writer.write_table(table, row_group_size=self.row_group_rows)
        self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()


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
    """Stream a layer file as Polars frames of at most `chunk_rows` rows."""
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        yield pl.from_arrow(pa.Table.from_batches([batch]))  # type: ignore[misc]


def row_count(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def empty_frame(path: Path) -> pl.DataFrame:
    """A layer file's columns with no rows, read from its footer alone."""
    return pl.from_arrow(pq.read_schema(path).empty_table())  # type: ignore[return-value]
