"""The LLM annotation cache in the application database, shared by every worker.

The same interface and rules as the embedded default's SQLite file
(`enrichers/cache.py`): successful annotations only, keyed by the content hash of what
produced them, stored as each answer arrives (one commit per answer), and
`ON CONFLICT DO NOTHING`, so two workers that annotate the same conversation both store a
valid answer and the first one wins. With `ENRICH_APP_DB_URL` set, a conversation paid for
on one machine is a cache hit on every other. The table is `llm_annotation_cache`
(migration `0005`, `enrich db upgrade`); the annotation is kept as the JSON text it was
stored with, so a hit gives back exactly the bytes a miss would have.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg

from enrichment_assets.enrichers.cache import CachedAnnotation

_KEYS_PER_QUERY = 1000
_INSERT = (
    "INSERT INTO llm_annotation_cache"
    " (key, model, prompt_version, annotation, prompt_tokens, completion_tokens)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING"
)
_SELECT = (
    "SELECT key, model, prompt_version, annotation, prompt_tokens, completion_tokens"
    " FROM llm_annotation_cache WHERE key = ANY(%s)"
)


class PostgresCacheWriter:
    """One open connection of the cache; `put` stores and commits one annotation."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def put(self, row: CachedAnnotation) -> None:
        self._conn.execute(_INSERT, row.stored_values())


class PostgresEnrichmentCache:
    """Successful annotations in the application database (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        with self._connect() as conn:
            found = conn.execute("SELECT to_regclass('llm_annotation_cache')").fetchone()
        if found is None or found[0] is None:
            raise RuntimeError(
                "the application database has no llm_annotation_cache table: "
                "run `enrich db upgrade` first"
            )

    def __repr__(self) -> str:
        return "PostgresEnrichmentCache(table='llm_annotation_cache')"

    def _connect(self) -> psycopg.Connection:
        # autocommit: each statement is its own transaction (one commit per answer).
        return psycopg.connect(self.url, autocommit=True, application_name="enrich llm cache")

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnnotation]:
        """The stored annotations for those of `keys` that have one."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CachedAnnotation] = {}
        if not wanted:
            return found
        with self._connect() as conn:
            for start in range(0, len(wanted), _KEYS_PER_QUERY):
                rows = conn.execute(_SELECT, [wanted[start : start + _KEYS_PER_QUERY]])
                for values in rows:
                    found[values[0]] = CachedAnnotation.from_stored(values)
        return found

    def put_many(self, rows: Iterable[CachedAnnotation]) -> int:
        """Store successful annotations (keys already present are kept); returns rows written."""
        params = [row.stored_values() for row in rows]
        if not params:
            return 0
        written = 0
        with self._connect() as conn, conn.transaction():
            for row in params:
                written += conn.execute(_INSERT, row).rowcount
        return written

    @contextmanager
    def writer(self) -> Iterator[PostgresCacheWriter]:
        """A connection that commits each `put` at once; use it from one thread."""
        with self._connect() as conn:
            yield PostgresCacheWriter(conn)

    def __len__(self) -> int:
        with self._connect() as conn:
            row = conn.execute("SELECT count(*) FROM llm_annotation_cache").fetchone()
        return int(row[0]) if row else 0
