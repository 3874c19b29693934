"""The enrichment cache: successful LLM annotations keyed by what produced them.

A re-materialization of an unchanged partition must not pay for anything it
already has, so every successful annotation is stored under a content hash of
(model, prompt version, annotation JSON schema, the conversation's roles and
contents, the render options). Change any of them and the key changes: a new
prompt or schema is a cache miss by construction, never a stale hit.

Failures are never stored: a conversation whose annotation failed is asked
again next time.

Storage is one SQLite file under the cache directory, shared by every partition
and every run process on the machine: WAL mode (readers never block the one
writer), a busy timeout (writers queue instead of failing) and
`ON CONFLICT DO NOTHING` (two runs that annotate the same conversation both
store a valid answer; the first one wins). SQLite's locking needs a local
filesystem: with the application database configured (`ENRICH_APP_DB_URL`),
`open_enrichment_cache` chooses its database-backed twin instead
(`app_db/llm_cache.py`), shared by workers on every machine.

The online enricher stores each answer as it arrives (`writer()`: one connection
for the chunk, one commit per answer), so a run killed mid-chunk has paid for
nothing it must buy again. A commit on an open WAL connection costs ~0.1 ms; a
connection per answer would cost ~8 ms, since closing the last connection
checkpoints the WAL to the database file.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

CACHE_FILE_NAME = "llm_annotations.sqlite3"
# SQLite's default limit on bound parameters is 32766; stay far below it.
_KEYS_PER_QUERY = 500

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS annotations (
    key               TEXT PRIMARY KEY,
    model             TEXT NOT NULL,
    prompt_version    TEXT NOT NULL,
    annotation        TEXT NOT NULL,  -- the validated annotation, as JSON
    prompt_tokens     INTEGER,        -- what the original request spent
    completion_tokens INTEGER,
    created_at        REAL NOT NULL   -- unix seconds
) WITHOUT ROWID
"""

_INSERT = """
INSERT INTO annotations
    (key, model, prompt_version, annotation, prompt_tokens, completion_tokens, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO NOTHING
"""


def annotation_cache_key(
    *,
    model: str,
    prompt_version: str,
    schema: Mapping[str, Any],
    turns: Sequence[tuple[str, str]],
    render_options: Mapping[str, Any] | None = None,
) -> str:
    """The sha256 that identifies one annotation request's meaning.

    `turns` are the conversation's (role, content) pairs in order; timestamps and
    ids are left out on purpose, so the same conversation landed twice is paid once.
    """
    payload = orjson.dumps(
        {
            "model": model,
            "prompt_version": prompt_version,
            "schema": schema,
            "turns": [[role, content] for role, content in turns],
            "render": dict(render_options or {}),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class CachedAnnotation:
    """One stored annotation and what it cost when it was first obtained."""

    key: str
    model: str
    prompt_version: str
    annotation: dict[str, Any]
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def stored_values(self) -> tuple[Any, ...]:
        """(key, model, prompt_version, annotation JSON, prompt_tokens, completion_tokens):
        the columns every cache stores, in this order."""
        return (
            self.key,
            self.model,
            self.prompt_version,
            orjson.dumps(self.annotation).decode(),
            self.prompt_tokens,
            self.completion_tokens,
        )

    @classmethod
    def from_stored(cls, values: Sequence[Any]) -> CachedAnnotation:
        """The annotation from the columns of `stored_values`, as read back."""
        key, model, version, annotation, prompt_tokens, completion_tokens = values
        return cls(
            key=key,
            model=model,
            prompt_version=version,
            annotation=orjson.loads(annotation),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


def _insert_params(row: CachedAnnotation) -> tuple[Any, ...]:
    return (*row.stored_values(), time.time())


class AnnotationCache(Protocol):
    """What the enricher needs of a cache: this SQLite file or the application database."""

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnnotation]: ...

    def put_many(self, rows: Iterable[CachedAnnotation]) -> int: ...

    def writer(self) -> Any: ...  # a context manager yielding an object with `put(row)`


def open_enrichment_cache(directory: Path, app_db_url: str | None = None) -> AnnotationCache:
    """The cache of a run: the application database's table when one is configured
    (shared by every machine), else the SQLite file under `directory` (this machine's)."""
    if app_db_url:
        # Imported here: a run without an application database never loads psycopg.
        from enrichment_assets.app_db.llm_cache import PostgresEnrichmentCache

        return PostgresEnrichmentCache(app_db_url)
    return EnrichmentCache(directory)


class CacheWriter:
    """One open connection of the cache; `put` stores and commits one annotation."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def put(self, row: CachedAnnotation) -> None:
        with self._conn:
            self._conn.execute(_INSERT, _insert_params(row))


class EnrichmentCache:
    """Successful annotations in a SQLite file under `directory` (see module docstring)."""

    def __init__(self, directory: Path, *, busy_timeout_s: float = 60.0) -> None:
        self.path = Path(directory) / CACHE_FILE_NAME
        self._busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn, conn:
            # WAL is a property of the file: set once, every later connection inherits it.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_CREATE_TABLE)

    def __repr__(self) -> str:
        return f"EnrichmentCache(path={str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        # A connection per operation: nothing to share across threads or forked processes.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s)
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnnotation]:
        """The stored annotations for those of `keys` that have one."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CachedAnnotation] = {}
        with closing(self._connect()) as conn:
            for start in range(0, len(wanted), _KEYS_PER_QUERY):
                chunk = wanted[start : start + _KEYS_PER_QUERY]
                placeholders = ",".join("?" * len(chunk))
                rows = conn.execute(
                    "SELECT key, model, prompt_version, annotation, prompt_tokens,"
                    f" completion_tokens FROM annotations WHERE key IN ({placeholders})",
                    chunk,
                )
                for values in rows:
                    found[values[0]] = CachedAnnotation.from_stored(values)
        return found

    def put_many(self, rows: Iterable[CachedAnnotation]) -> int:
        """Store successful annotations (keys already present are kept); returns rows written."""
        params = [_insert_params(row) for row in rows]
        if not params:
            return 0
        with closing(self._connect()) as conn, conn:
            before = conn.total_changes
            conn.executemany(_INSERT, params)
            return conn.total_changes - before

    @contextmanager
    def writer(self) -> Iterator[CacheWriter]:
        """A connection that commits each `put` at once; use it from one thread."""
        with closing(self._connect()) as conn:
            yield CacheWriter(conn)

    def __len__(self) -> int:
        with closing(self._connect()) as conn:
            return conn.execute("SELECT count(*) FROM annotations").fetchone()[0]
