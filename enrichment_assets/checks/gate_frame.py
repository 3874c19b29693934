"""The frame a quality gate validates: one layer file of one partition, flattened for GX.

GX tests columns of scalars, so the layer's Parquet is projected in DuckDB:
struct columns become one column per field (`enrichment.confidence`), the
`messages` list becomes per-conversation facts (`messages.roles`, ... see
`sql/quality_gate_facts.sql`). Only the columns a suite reads are loaded; every
other column is projected as NULL, so the column-set expectations still see the
file's schema while a wide text column (raw_text, summaries) costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from enrichment_assets.sql_files import load_sql

if TYPE_CHECKING:
    import pandas as pd

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


def gate_frame(parquet_path: Path, needed: Iterable[str]) -> pd.DataFrame:
    """The layer file as a pandas frame of gate columns; unneeded ones are all-NULL."""
    wanted = set(needed)
    columns = frame_columns(pq.read_schema(parquet_path))
    select = ", ".join(
        f"{expression if name in wanted else 'NULL'} AS {_quote(name)}"
        for name, expression in columns.items()
    )
    con = duckdb.connect()
    try:
        con.execute(load_sql("quality_gate_facts"))
        return con.execute(f"SELECT {select} FROM read_parquet(?)", [str(parquet_path)]).df()
    finally:
        con.close()
