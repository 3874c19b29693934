"""Numbered SQL migrations under `sql/postgres/`, applied once each, in order.

`NNNN_<what>.sql` files are applied by `enrich db upgrade`: each in its own
transaction together with its row in `enrich_schema_migrations`, under an
advisory lock so that two upgrades started at once apply each file once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from enrichment_assets.sql_files import SQL_DIR

MIGRATIONS_DIR = SQL_DIR / "postgres"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant that names this project's upgrade lock.
_ADVISORY_LOCK_KEY = 0x656E7269  # "enri"

_CREATE_VERSIONS_TABLE = """
CREATE TABLE IF NOT EXISTS enrich_schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files, by version; a duplicated version is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two migrations with version {version:04d} in {directory}")
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


def applied_versions(url: str) -> set[int]:
    with psycopg.connect(url) as conn:
        conn.execute(_CREATE_VERSIONS_TABLE)
        return {row[0] for row in conn.execute("SELECT version FROM enrich_schema_migrations")}


def upgrade(url: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply the migrations not applied yet; returns those applied now."""
    applied_now: list[Migration] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_CREATE_VERSIONS_TABLE)
        conn.execute("SELECT pg_advisory_lock(%s)", [_ADVISORY_LOCK_KEY])
        try:
            done = {r[0] for r in conn.execute("SELECT version FROM enrich_schema_migrations")}
            for migration in available_migrations(directory):
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.path.read_text(encoding="utf-8"))
                    conn.execute(
                        "INSERT INTO enrich_schema_migrations (version, name) VALUES (%s, %s)",
                        [migration.version, migration.name],
                    )
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_ADVISORY_LOCK_KEY])
    return applied_now
