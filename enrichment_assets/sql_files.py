"""Where the SQL lives: the top-level `sql/` folder (package data in the wheel), one file per
transformation."""

from __future__ import annotations

from pathlib import Path

from enrichment_assets.package_data import package_data_path

SQL_DIR = package_data_path("sql")


def sql_path(name: str) -> Path:
    """The path of `sql/<name>.sql` (`name` may carry the `.sql` suffix or not)."""
    filename = name if name.endswith(".sql") else f"{name}.sql"
    path = SQL_DIR / filename
    if not path.is_file():
        raise FileNotFoundError(f"SQL file {filename!r} not found in {SQL_DIR}")
    return path


def load_sql(name: str) -> str:
    """The text of `sql/<name>.sql`, ready for `duckdb` `execute(sql, parameters)`."""
    return sql_path(name).read_text(encoding="utf-8")
