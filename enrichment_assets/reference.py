"""Reference metadata (personas, emotional arcs, training topics, templates).

The embedded default reads the seed files shipped in the package; production
reads the application database's tables (`ENRICH_APP_DB_URL`, see `app_db`).
The join itself lives in `sql/enriched_conversations.sql`.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

SEEDS_DIR = Path(__file__).resolve().parent / "seeds"
REFERENCE_TABLES: tuple[str, ...] = ("personas", "emotional_arcs", "training_topics", "templates")


def load_reference_seeds(con: duckdb.DuckDBPyConnection, seeds_dir: Path = SEEDS_DIR) -> None:
    """Create the four reference tables in `con` from the seed CSV files."""
    for table in REFERENCE_TABLES:
        path = seeds_dir / f"{table}.csv"
        # Every column as text: ids and names are never numbers to be guessed at.
        con.execute(
            f"CREATE OR REPLACE TABLE {table} AS "
            "SELECT * FROM read_csv(?, header = true, all_varchar = true)",
            [str(path)],
        )


def load_reference(con: duckdb.DuckDBPyConnection, app_db_url: str | None) -> str:
    """Create the four reference tables in `con`; returns where they came from.

    From the application database when `app_db_url` is set (read with psycopg and
    handed to DuckDB as Arrow: no DuckDB extension involved), else from the seeds.
    """
    if app_db_url is None:
        load_reference_seeds(con)
        return "seeds"
    from enrichment_assets.app_db import read_reference_tables  # psycopg: only when set

    for table, rows in read_reference_tables(app_db_url, REFERENCE_TABLES).items():
        con.register(f"{table}__app_db", rows)
        try:
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM {table}__app_db")
        finally:
            con.unregister(f"{table}__app_db")
    return "app_db"
