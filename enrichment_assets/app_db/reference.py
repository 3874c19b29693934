"""Reference tables read from (and seeded into) the application database."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import psycopg
import pyarrow as pa
from psycopg import sql


def read_reference_tables(url: str, tables: Iterable[str]) -> dict[str, pa.Table]:
    """Each table as Arrow, every column as text (as the seed files are read).

    Reference tables are small (hundreds of rows), so a plain SELECT is enough.
    """
    read: dict[str, pa.Table] = {}
    with psycopg.connect(url) as conn:
        for table in tables:
            cursor = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
            names = [column.name for column in cursor.description or []]
            rows = cursor.fetchall()
            read[table] = pa.table(
                {
                    name: pa.array(
                        [None if row[i] is None else str(row[i]) for row in rows], pa.string()
                    )
                    for i, name in enumerate(names)
                }
            )
    return read


def seed_reference_tables(url: str, seeds_dir: Path, tables: Iterable[str]) -> dict[str, int]:
    """Copy the seed CSV files into reference tables that are still empty.

    For a new application database and for the demo; a table that already holds
    rows belongs to the application and is left alone. Returns rows copied per table.
    """
    copied: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        for table in tables:
            if conn.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
            ).fetchone()[0]:  # type: ignore[index]
                copied[table] = 0
                continue
            with (seeds_dir / f"{table}.csv").open(newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                header = next(reader)
                statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, header))
                )
                count = 0
                with conn.cursor().copy(statement) as copy:
                    for row in reader:
                        copy.write_row([value if value != "" else None for value in row])
                        count += 1
            copied[table] = count
    return copied
