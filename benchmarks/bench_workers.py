"""Benchmark: N run workers (`enrich worker`, separate processes) against one, same input.

    uv run python benchmarks/bench_workers.py --partitions 40 --per-partition 5 --workers 4

Each side is a cluster of its own (tests/worker_pool.py): a Dagster instance on a fresh
PostgreSQL database (deploy/dagster.yaml), a fresh application database, a lake folder and
a loopback LLM endpoint. The batches are landed, then the workers backfill them; the clock
runs from the workers' start to the last one's exit. One worker is the baseline: the N
workers' time is printed as a ratio to it. Checked as in tests/test_run_workers.py: the
exports are equal byte for byte, no conversation id is exported twice, each conversation
is paid for once. Also printed, per partition and per conversation: the workers' CPU, the
PostgreSQL transactions and rows written (instance and application database), and the
files written to the lake (what object-store PUTs would be): the inputs of
benchmarks/PLAN_100M.md.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for `tests.*`

import orjson  # noqa: E402
import psycopg  # noqa: E402

from enrichment_assets.app_db import seed_reference_tables, upgrade  # noqa: E402
from enrichment_assets.reference import REFERENCE_TABLES, SEEDS_DIR  # noqa: E402
from tests.factories import conversation, message, write_jsonl  # noqa: E402
from tests.llm_server import LoopbackLLMServer  # noqa: E402
from tests.postgres import PG_SERVER  # noqa: E402
from tests.worker_pool import Cluster, export_files  # noqa: E402

_STATS = "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database"


@dataclass
class Side:
    workers: int
    seconds: float
    cpu_s: float
    transactions: int
    rows_written: int
    lake_files: int
    lake_bytes: int
    lake_folders: dict[str, int]  # files written, by folder (two levels under the lake)
    exports: dict[str, bytes]
    paid: dict[str, int]


def _database(purpose: str, created: list[str]) -> str:
    name = f"enrich_bench_{purpose}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    created.append(name)
    return f"{PG_SERVER}/{name}"


def _pg_stats(urls: list[str]) -> tuple[int, int]:
    totals = [0, 0]
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        for url in urls:
            row = conn.execute(_STATS + " WHERE datname = %s", [url.rsplit("/", 1)[1]]).fetchone()
            totals = [totals[0] + row[0], totals[1] + row[1]]
    return totals[0], totals[1]


_FILLER = "The refund for my last order has not arrived and the page keeps timing out. "


def _inputs(folder: Path, partitions: int, per_partition: int, chars: int) -> list[Path]:
    """Distinct conversations; `chars` pads each message to about that many characters
    (the sample generator's conversations hold about 3,400 over their messages)."""
    pad = _FILLER * (chars // 2 // len(_FILLER))
    return [
        write_jsonl(
            folder / f"batch-{i:03d}.jsonl",
            [
                conversation(
                    messages=[
                        message("user", f"Question {i}-{j} about refunds? {pad}"),
                        message("assistant", f"Answer {i}-{j}: open the refunds page. {pad}"),
                    ]
                )
                for j in range(per_partition)
            ],
        )
        for i in range(partitions)
    ]


def _side(root: Path, files: list[Path], workers: int, created: list[str]) -> Side:
    app = _database("app", created)
    upgrade(app)
    seed_reference_tables(app, SEEDS_DIR, REFERENCE_TABLES)
    dagster = _database("dagster", created)
    lake_dir = root / "lake"
    with LoopbackLLMServer() as llm:
        cluster = Cluster(root, dagster, app, {"ENRICH_DATA_DIR": str(lake_dir)}, llm.base_url)
        cluster.land(files)
        before_pg = _pg_stats([app, dagster])
        before_files = {p for p in lake_dir.rglob("*") if p.is_file()}
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        processes = [cluster.start_worker(f"worker-{i}") for i in range(workers)]
        for process in processes:
            _, stderr = process.communicate(timeout=3600)
            if process.returncode != 0:
                raise SystemExit(f"a worker failed ({process.returncode}): {stderr[-2000:]}")
        seconds = time.monotonic() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        paid = dict(llm.counters.successes)
    transactions, rows = (a - b for a, b in zip(_pg_stats([app, dagster]), before_pg, strict=True))
    written = [p for p in lake_dir.rglob("*") if p.is_file() and p not in before_files]
    return Side(
        workers=workers,
        seconds=seconds,
        cpu_s=(cpu_after.ru_utime + cpu_after.ru_stime)
        - (cpu_before.ru_utime + cpu_before.ru_stime),
        transactions=transactions,
        rows_written=rows,
        lake_files=len(written),
        lake_bytes=sum(p.stat().st_size for p in written),
        lake_folders=dict(Counter("/".join(p.relative_to(lake_dir).parts[:2]) for p in written)),
        exports=export_files(lake_dir),
        paid=paid,
    )


def _check(one: Side, many: Side, conversations: int) -> None:
    assert many.exports == one.exports, "the exports differ from a single worker's"
    ids = [
        orjson.loads(line)["conversation_id"]
        for name, data in many.exports.items()
        if name.startswith("export/enriched/")
        for line in data.splitlines()
    ]
    assert len(ids) == len(set(ids)) == conversations, "a conversation exported twice or lost"
    assert set(many.paid) == set(one.paid) and set(many.paid.values()) == {1}, "paid twice"


def _report(side: Side, partitions: int, conversations: int, baseline: Side) -> None:
    ratio = side.seconds / baseline.seconds
    print(
        f"{side.workers} worker(s): {side.seconds:7.1f} s  ratio {ratio:5.2f}"
        f"  speed-up {1 / ratio:4.2f}x  CPU {side.cpu_s:6.1f} s"
        f" ({side.cpu_s / partitions:.2f} s/partition)"
    )
    print(
        f"    per partition: {side.transactions / partitions:.0f} PostgreSQL transactions, "
        f"{side.rows_written / partitions:.0f} rows written, {side.lake_files / partitions:.1f} "
        f"lake files ({side.lake_bytes / partitions / 1024:.1f} KiB); per conversation: "
        f"{side.transactions / conversations:.1f} transactions, "
        f"{len(side.paid) / conversations:.2f} LLM requests"
    )
    folders = sorted(side.lake_folders.items(), key=lambda item: -item[1])
    print("    lake files by folder: " + ", ".join(f"{k} {v}" for k, v in folders))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=40)
    parser.add_argument("--per-partition", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--chars", type=int, default=0, help="characters per conversation")
    args = parser.parse_args()
    conversations = args.partitions * args.per_partition
    created: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
            root = Path(tmp)
            files = _inputs(root / "input", args.partitions, args.per_partition, args.chars)
            one = _side(root / "one", files, 1, created)
            many = _side(root / "many", files, args.workers, created)
            _check(one, many, conversations)
            print(
                f"{args.partitions} partitions x {args.per_partition} conversations"
                f" (~{args.chars} characters each)"
            )
            for side in (one, many):
                _report(side, args.partitions, conversations, one)
            print("checked: exports byte-identical, no id twice, each conversation paid once")
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            for name in created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
