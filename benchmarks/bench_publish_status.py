"""Benchmark: publishing one partition's statuses to the application database.

    uv run python benchmarks/bench_publish_status.py --rows 100000

Creates a scratch database on the server (`--server`, default the local one),
applies the migrations, then times `publish_status` for `--rows` status rows:
- first: every row inserted (COPY into staging, upsert, partition delete);
- changed: the same partition again with every status changed (all rows updated);
- unchanged: the same frame again (the upsert skips unchanged rows).
Prints each wall time (median of --repeat runs) and rows per second. The
scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg

from enrichment_assets.app_db import upgrade
from enrichment_assets.app_db.publish import publish_status
from enrichment_assets.status import STATUS_SCHEMA


def status_frame(partition: str, rows: int, status: str, now: datetime) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "partition": [partition] * rows,
            "record_index": range(rows),
            "conversation_id": [str(uuid.uuid4()) for _ in range(rows)],
            "status": [status] * rows,
            "retry_count": [0] * rows,
            "last_attempt": [now] * rows,
            "last_error": [None if i % 50 else "missing_assistant_message" for i in range(rows)],
            "raw_stored_at": [now] * rows,
            "enriched_at": [now if status == "completed" else None] * rows,
            "updated_at": [now] * rows,
        },
        schema=STATUS_SCHEMA,
    )


def timed(url: str, partition: str, frame: pl.DataFrame) -> float:
    started = time.perf_counter()
    publish_status(url, partition, frame)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    name = f"enrich_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{args.server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{args.server}/{name}"
    try:
        upgrade(url)
        now = datetime.now(UTC)
        first, changed, unchanged = [], [], []
        for attempt in range(args.repeat):
            partition = f"bench-{attempt}"
            started = status_frame(partition, args.rows, "not_started", now)
            done = status_frame(partition, args.rows, "completed", now + timedelta(minutes=5))
            first.append(timed(url, partition, started))
            changed.append(timed(url, partition, done))
            unchanged.append(timed(url, partition, done))
        for label, times in (("first", first), ("changed", changed), ("unchanged", unchanged)):
            median = statistics.median(times)
            print(
                f"publish {args.rows:,} status rows, {label:>9}: {median:6.2f} s "
                f"({args.rows / median:,.0f} rows/s; median of {args.repeat})"
            )
    finally:
        with psycopg.connect(f"{args.server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
