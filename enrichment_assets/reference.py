"""Reference metadata (personas, emotional arcs, training topics, templates).

The embedded default reads the seed files shipped in the package; the join
itself lives in `sql/enriched_conversations.sql`.
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
