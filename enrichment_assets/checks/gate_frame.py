"""The frame a quality gate validates: one layer file of one partition, flattened for GX.

GX tests columns of scalars, so the layer's Parquet is projected in DuckDB:
struct columns become one column per field (`enrichment.confidence`), the
`messages` list becomes per-conversation facts (`messages.roles`, ... see
`sql/quality_gate_facts.sql`). Only the columns a suite reads are loaded; every
other column is projected as NULL, so the column-set expectations still see the
file's schema while a wide text column (raw_text, summaries) costs nothing.

`gate_frames` reads the file in chunks (see `gate_chunks`): consecutive row ranges,
or rows split by a hash of key columns; each frame's index is the rows' positions in
the file, so that GX's unexpected row indexes are the file's.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from enrichment_assets.checks.gate_chunks import HASH, ROWS, ChunkPlan
from enrichment_assets.sql_files import load_sql

if TYPE_CHECKING:
    import pandas as pd

# DuckDB threads of a chunked gate's queries (the next chunk is read while GX judges this one:
# one thread keeps up, and buffers least), and the memory of the numbering of repeated values
# (`_hash_frames`). A file judged on one frame is read before GX starts, nothing beside it:
# with every core (`_read_threads`).
GATE_SQL_THREADS = 1
GATE_PAIRS_MEMORY = "48MB"
# The `messages` facts and the macro of sql/quality_gate_facts.sql computing each.
MESSAGE_FACTS = {
    "messages.count": "gate_messages_count",
    "messages.user_count": "gate_messages_user_count",
    "messages.assistant_count": "gate_messages_assistant_count",
    "messages.roles": "gate_messages_roles",
    "messages.min_content_chars": "gate_messages_min_content_chars",
    "messages.max_timestamp": "gate_messages_max_timestamp",
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def frame_columns(schema: pa.Schema) -> dict[str, str]:
    """{gate column name: DuckDB expression} for every column of a layer file."""
    columns: dict[str, str] = {}
    for field in schema:
        source = _quote(field.name)
        if field.name == "messages":
            columns.update({name: f"{macro}({source})" for name, macro in MESSAGE_FACTS.items()})
        elif pa.types.is_struct(field.type):
            for child in field.type:
                columns[f"{field.name}.{child.name}"] = f"{source}.{_quote(child.name)}"
        else:
            columns[field.name] = source
    return columns


def _select(columns: dict[str, str], wanted: set[str], keep_all: bool) -> str:
    return ", ".join(
        f"{expression if name in wanted else 'NULL'} AS {_quote(name)}"
        for name, expression in columns.items()
        if keep_all or name in wanted
    )


def gate_frame(parquet_path: Path, needed: Iterable[str]) -> pd.DataFrame:
    """The layer file as a pandas frame of gate columns; unneeded ones are all-NULL."""
    columns = frame_columns(pq.read_schema(parquet_path))
    con = duckdb.connect()
    try:
        con.execute(load_sql("quality_gate_facts"))
        return con.execute(
            f"SELECT {_select(columns, set(needed), True)} FROM read_parquet(?)",
            [str(parquet_path)],
        ).df()
    finally:
        con.close()


def _dictionary_frame(table: pa.Table) -> pd.DataFrame:
    """`table` as pandas, its strings as categoricals: a value repeated a million times
    (one id in every row) is then one string and a million small codes, not a million
    Python strings. The index is the rows' positions in the file (`__row`)."""
    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = column.dictionary_encode()
        columns[name] = column
    frame = pa.table(columns).to_pandas()
    return frame.set_index("__row").rename_axis(None).sort_index()


def gate_frames(
    parquet_path: Path, needed: Iterable[str], plan: ChunkPlan, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """The layer file as frames of at most about `chunk_rows` rows, split as `plan` says.

    A `rows` frame holds every gate column (unneeded ones all-NULL, as `gate_frame`);
    the others hold only the `needed` ones. A file without rows is one empty frame.
    """
    wanted = set(needed)
    columns = frame_columns(pq.read_schema(parquet_path))
    rows = pq.ParquetFile(parquet_path).metadata.num_rows
    select = _select(columns, wanted, plan.split == ROWS)
    source = "read_parquet(?, file_row_number = true)"
    with tempfile.TemporaryDirectory(prefix="enrich-gate-") as spill:
        threads = _read_threads(rows, chunk_rows)
        con = duckdb.connect(config={"threads": threads, "temp_directory": spill})
        try:
            con.execute(load_sql("quality_gate_facts"))
            if plan.split == ROWS:
                relation = con.sql(
                    f"SELECT file_row_number AS __row, {select} FROM {source}",
                    params=[str(parquet_path)],
                )
                yield from _row_frames(relation.to_arrow_reader(chunk_rows), chunk_rows)
            elif plan.split == HASH:
                parts = max(1, math.ceil(rows / chunk_rows))
                keys = ", ".join(columns.get(k, "NULL") for k in plan.keys) or "NULL"
                yield from _hash_frames(con, str(parquet_path), select, keys, parts)
            else:
                table = con.sql(
                    f"SELECT file_row_number AS __row, {select} FROM {source}",
                    params=[str(parquet_path)],
                ).to_arrow_table()
                yield _dictionary_frame(table)
        finally:
            con.close()


def _read_threads(rows: int, chunk_rows: int) -> int:
    """DuckDB threads reading a file of `rows` in frames of `chunk_rows`: GATE_SQL_THREADS
    when chunked; every core for one frame (the message facts of 100,000 conversations took
    2.0 s on one thread of two free cores, 1.3 s on both)."""
    return GATE_SQL_THREADS if rows > chunk_rows else max(1, len(os.sched_getaffinity(0)))


def _row_frames(reader: pa.RecordBatchReader, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The reader's rows in consecutive frames of `chunk_rows` rows (the last one fewer; a
    result without rows is one empty frame), as `_dictionary_frame`s: Arrow batches made
    categorical cost GX less than Python strings, for the same results."""
    pending: list[pa.RecordBatch] = []
    size = 0
    sent = False
    for batch in reader:
        pending.append(batch)
        size += batch.num_rows
        while size >= chunk_rows:
            table = pa.Table.from_batches(pending, reader.schema)
            yield _dictionary_frame(table.slice(0, chunk_rows))
            pending, size, sent = table.slice(chunk_rows).to_batches(), size - chunk_rows, True
    if size or not sent:
        yield _dictionary_frame(pa.Table.from_batches(pending, reader.schema))


def _hash_frames(
    con: duckdb.DuckDBPyConnection, parquet_path: str, select: str, keys: str, parts: int
) -> Iterator[pd.DataFrame]:
    """The file's rows in `parts` frames for a uniqueness expectation on `keys`.

    Every repeat of a value must share a frame with another repeat of it, or a frame
    would see it once and take it for unique. Splitting by a hash of the value does that,
    but one value repeated a million times (every invalid line of a file has the same
    id) would make one frame of a million rows. So the repeats of a value go in pairs
    (the last three together when they are odd), and it is the pairs that are spread by
    hash: each frame holds about `rows / parts` rows, and a repeated value is flagged in
    every frame it lands in. The unique values (one row) are spread by their own hash.
    """
    source = "read_parquet(?, file_row_number = true)"
    # Numbering a million repeats of one value is a window over a million rows: within
    # GATE_PAIRS_MEMORY, spilling past it (it took 160 MiB more unbounded). The bucket
    # numbers are written in, not bound: a bound modulus keeps DuckDB from folding the
    # filter (25 times slower). Both are our own integers.
    con.execute(f"SET memory_limit = '{GATE_PAIRS_MEMORY}'")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE gate_pairs AS "
        f"SELECT file_row_number AS __row, hash(__key, CASE WHEN repeats < 2 THEN 0 "
        f"ELSE least((repeat - 1) // 2, repeats // 2 - 1) END) % {int(parts)} AS __part "
        f"FROM (SELECT file_row_number, hash({keys}) AS __key, "
        f"row_number() OVER (PARTITION BY {keys}) AS repeat, "
        f"count(*) OVER (PARTITION BY {keys}) AS repeats FROM {source})",
        [parquet_path],
    )
    con.execute("RESET memory_limit")
    try:
        for part in range(parts):
            table = con.sql(
                f"SELECT file_row_number AS __row, {select} FROM {source} "
                f"JOIN gate_pairs ON file_row_number = gate_pairs.__row "
                f"WHERE gate_pairs.__part = {int(part)}",
                params=[parquet_path],
            ).to_arrow_table()
            yield _dictionary_frame(table)
    finally:
        con.execute("DROP TABLE IF EXISTS gate_pairs")
