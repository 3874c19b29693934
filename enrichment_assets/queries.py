"""Read-only questions over the lake, answered by DuckDB over the Parquet files.

Used by the command line (`enrich status`, `enrich report`); nothing here loads
every partition into Python.
"""

from __future__ import annotations

import glob
from typing import Any

import duckdb
import orjson

from enrichment_assets.identity import identity_index
from enrichment_assets.lake import LAYERS, Lake
from enrichment_assets.low_confidence import conversation_attempts
from enrichment_assets.sql_files import load_sql

# Counted per layer: (layer file, optional filter). `quarantined` holds every record set
# aside at validation: contract failures and the identity's duplicates, id conflicts and
# superseded versions, which are also counted on their own from the statuses (a version
# superseded after it was exported leaves the exports, not the layers).
LAYER_COUNTS = {
    "raw": ("raw", None),
    "validated": ("validated", None),
    "quarantined": ("quarantine", None),
    "enriched": ("enriched", None),
    "normalized": ("normalized", None),
    "completed": ("status", "status = 'completed'"),
    "duplicates": ("status", "status IN ('duplicate', 'id_conflict')"),
    "superseded": ("status", "status = 'superseded'"),
}


def _has_files(pattern: str) -> bool:
    return bool(glob.glob(pattern))


def known_partitions(lake: Lake) -> set[str]:
    """Every batch partition the lake holds: registered in its landing store or with a layer file.

    The names come from listing the lake's folders, so a name a caller gives (a
    `--partition`, a status row from the application database) is looked up here
    before it goes into a path: `../../x` is simply not found.
    """
    known = set(lake.registered_batches())
    for layer in LAYERS:
        folder = lake.data_dir / "lake" / layer
        if folder.is_dir():
            known.update(p.name.removesuffix(".parquet") for p in folder.glob("*.parquet"))
    return known


def layer_counts(lake: Lake) -> dict[str, dict[str, int]]:
    """{partition: {layer: rows}} for every partition with data, plus a 'total' entry."""
    con = duckdb.connect()
    per_partition: dict[str, dict[str, int]] = {}
    try:
        for name, (layer, condition) in LAYER_COUNTS.items():
            pattern = lake.layer_glob(layer)
            if not _has_files(pattern):
                continue
            where = f"WHERE {condition}" if condition else ""
            rows = con.execute(
                "SELECT regexp_extract(filename, '([^/]+)\\.parquet$', 1) AS partition, count(*) "
                f"FROM read_parquet(?, filename = true) {where} GROUP BY ALL",
                [pattern],
            ).fetchall()
            for partition, count in rows:
                per_partition.setdefault(partition, dict.fromkeys(LAYER_COUNTS, 0))[name] = count
    finally:
        con.close()
    total = dict.fromkeys(LAYER_COUNTS, 0)
    for counts in per_partition.values():
        for name, value in counts.items():
            total[name] += value
    return {**dict(sorted(per_partition.items())), "total": total}


def conversation_status(
    lake: Lake, conversation_id: str, app_db_url: str | None = None
) -> dict[str, Any] | None:
    """The status, validation report and documents of one conversation, or None.

    The status row comes from the application database when `app_db_url` is set
    (what production publishes), else from the lake's status Parquet; the
    documents and the validation report always come from the lake.
    """
    pattern = lake.layer_glob("status")
    if app_db_url is None and not _has_files(pattern):
        return None
    con = duckdb.connect()
    try:
        con.execute(load_sql("macros"))
        status = _current_status(con, pattern, conversation_id, app_db_url)
        if status is None:
            return None
        partition, record_index = status["partition"], status["record_index"]
        raw, report, enriched_doc = _documents(con, lake, partition, record_index, conversation_id)
        set_aside = _set_aside_rows(con, pattern, conversation_id) if _has_files(pattern) else []
    finally:
        con.close()
    return {
        "conversation_id": conversation_id,
        "status": status["status"],
        "partition": partition,
        "record_index": record_index,
        "retry_count": status["retry_count"],
        "last_attempt": _iso(status["last_attempt"]),
        "last_error": status["last_error"],
        "raw_stored_at": _iso(status["raw_stored_at"]),
        "enriched_at": _iso(status["enriched_at"]),
        "validation_errors": orjson.loads(report) if report else [],
        # Every landed occurrence of the id: which content, when, and which is current.
        "versions": identity_index(lake, app_db_url).versions(conversation_id),
        # Its records set aside as duplicates, id conflicts or superseded versions, and why.
        "set_aside": set_aside,
        "raw": _parse_or_text(raw),
        "enriched": enriched_doc,
        # Each enrichment attempt (model, confidence, when); the best one is current.
        "enrichment_attempts": (
            conversation_attempts(lake, partition, conversation_id)
            if partition in known_partitions(lake)
            else []
        ),
    }


def _current_status(
    con: duckdb.DuckDBPyConnection, pattern: str, conversation_id: str, app_db_url: str | None
) -> dict[str, Any] | None:
    """The conversation's status row: from the application database when `app_db_url` is
    set, else its current record in the lake's status files (one not set aside by the
    identity index first)."""
    if app_db_url is not None:
        from enrichment_assets.app_db import find_status  # psycopg: only when set

        return find_status(app_db_url, conversation_id)
    found = con.execute(
        "SELECT * FROM read_parquet(?) WHERE conversation_id = ? "
        "ORDER BY status::VARCHAR IN ('duplicate', 'id_conflict', 'superseded'), "
        "updated_at DESC LIMIT 1",
        [pattern, conversation_id],
    ).fetchone()
    columns = [d[0] for d in con.description]
    return dict(zip(columns, found, strict=True)) if found else None


def _documents(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    partition: str,
    record_index: int,
    conversation_id: str,
) -> tuple[Any, Any, Any]:
    """The raw text, the validation report and the enriched document of the record, from
    the lake (None each when the partition is not one of the lake's)."""
    # A row of the application database may name any partition: read only the lake's.
    if partition not in known_partitions(lake):
        return None, None, None
    raw = _one(con, lake.layer_path("raw", partition), record_index, "raw_text")
    report = _one(con, lake.layer_path("quarantine", partition), record_index, "validation_errors")
    return raw, report, _enriched_document(lake, partition, conversation_id)


def _set_aside_rows(
    con: duckdb.DuckDBPyConnection, pattern: str, conversation_id: str
) -> list[dict[str, Any]]:
    rows = con.execute(
        "SELECT partition, record_index, status::VARCHAR, last_error FROM read_parquet(?) "
        "WHERE conversation_id = ? AND status::VARCHAR IN ('duplicate', 'id_conflict', "
        "'superseded') ORDER BY partition, record_index",
        [pattern, conversation_id],
    ).fetchall()
    return [
        {"partition": p, "record_index": i, "status": status, "reason": reason}
        for p, i, status, reason in rows
    ]


def _one(con: duckdb.DuckDBPyConnection, path: Any, record_index: int, column: str) -> Any:
    if not path.exists():
        return None
    row = con.execute(
        f"SELECT {column} FROM read_parquet(?) WHERE record_index = ?", [str(path), record_index]
    ).fetchone()
    return row[0] if row else None


def _enriched_document(lake: Lake, partition: str, conversation_id: str) -> dict | None:
    path = lake.export_path("enriched", partition)
    if not path.exists():
        return None
    needle = f'"conversation_id":"{conversation_id}"'.encode()
    with path.open("rb") as handle:
        for line in handle:
            if needle in line[: len(needle) + 2]:
                return orjson.loads(line)
    return None


def _parse_or_text(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
