"""`enrich status --partition P --status S`: conversations and counts per status.

One DuckDB query over the status Parquet of every partition (the glob), so a
listing never loads a partition into Python; `limit`/`offset` page the rows.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from enrichment_assets.cli.operations import OperationError, OperationUsageError
from enrichment_assets.contract import STATUSES
from enrichment_assets.lake import Lake
from enrichment_assets.queries import known_partitions

LISTED_COLUMNS = (
    "conversation_id",
    "partition",
    "record_index",
    "status",
    "retry_count",
    "last_attempt",
    "last_error",
    "enriched_at",
)


@dataclass
class StatusListing:
    """Counts per status over the filtered rows, and one page of those rows."""

    partition: str | None
    status: str | None
    counts: dict[str, int]
    total: int
    limit: int
    offset: int
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "status": self.status,
            "total": self.total,
            "counts": self.counts,
            "limit": self.limit,
            "offset": self.offset,
            "items": self.items,
        }


def list_statuses(
    lake: Lake,
    *,
    partition: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> StatusListing:
    """The conversations of `partition` and/or in `status`, ordered by partition and position."""
    if status is not None and status not in STATUSES:
        expected = ", ".join(STATUSES)
        raise OperationUsageError(f"unknown status {status!r}: expected one of {expected}")
    if limit < 0 or offset < 0:
        raise OperationUsageError("--limit and --offset must be zero or more")
    pattern = lake.layer_glob("status")
    if partition is not None:
        # Looked up among the lake's partitions before it names a file: no `../` reads.
        if partition not in known_partitions(lake):
            raise OperationUsageError(f"--partition {partition!r}: no such partition")
        if not lake.layer_path("status", partition).exists():
            raise OperationError(f"partition {partition!r}: it has no status yet")
    empty = StatusListing(partition, status, dict.fromkeys(STATUSES, 0), 0, limit, offset)
    if not glob.glob(pattern):
        return empty
    source = str(lake.layer_path("status", partition)) if partition else pattern
    where = "WHERE ($status IS NULL OR status::VARCHAR = $status)"
    params = {"source": source, "status": status}
    con = duckdb.connect()
    try:
        counted = con.execute(
            f"SELECT status::VARCHAR, count(*) FROM read_parquet($source) {where} GROUP BY ALL",
            params,
        ).fetchall()
        rows = con.execute(
            f"SELECT {', '.join(LISTED_COLUMNS[:3])}, status::VARCHAR AS status, "
            f"{', '.join(LISTED_COLUMNS[4:])} FROM read_parquet($source) {where} "
            "ORDER BY partition, record_index LIMIT $limit OFFSET $offset",
            {**params, "limit": limit, "offset": offset},
        ).fetchall()
    finally:
        con.close()
    counts = dict.fromkeys(STATUSES, 0) | {name: int(n) for name, n in counted}
    items = [
        {name: _plain(value) for name, value in zip(LISTED_COLUMNS, row, strict=True)}
        for row in rows
    ]
    return StatusListing(partition, status, counts, sum(counts.values()), limit, offset, items)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
