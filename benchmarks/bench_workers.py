"""Benchmark: N run workers (`enrich worker`, separate processes) against one, same input.

    uv run python benchmarks/bench_workers.py --partitions 40 --per-partition 5 --workers 4
    uv run python benchmarks/bench_workers.py --conversations 1000000 --workers 2 --store s3

Each side is a cluster of its own (tests/worker_pool.py): a Dagster instance on a fresh
PostgreSQL database (deploy/dagster.yaml), a fresh application database, a lake and a
loopback LLM endpoint. The lake of the N workers is `--store` (a local folder, or `s3`: a
bucket on a SeaweedFS started on 127.0.0.1, each worker with a working copy of its own),
the single worker's `--baseline-store` (default: a local folder). The batches are landed,
then the workers backfill them; the clock runs from the workers' start to the last one's
exit. The N workers run first; each side's figures are printed as soon as it is done, then
the N workers' time as a ratio to the single worker's. Checked as in
tests/test_run_workers.py: the exports are equal byte for byte (compared by SHA-256, so a
million conversations are never held in memory), no conversation id is exported twice, each
conversation is paid for once (counted by the loopback server). Also printed, per partition
and per conversation: the workers' CPU, their peak memory (RSS summed over each worker's
process tree every second, an upper bound; the SeaweedFS server's own peak beside it), the
PostgreSQL transactions and rows written (instance and application database), the files
written to the lake folder or the objects and bytes in the store: the inputs of
benchmarks/PLAN_100M.md. Every minute a line says how many runs have succeeded so far.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import resource
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for `tests.*` and `benchmarks.*`

import orjson  # noqa: E402
import psycopg  # noqa: E402

from benchmarks.bench_pipeline import _tree_rss_kib  # noqa: E402
from enrichment_assets.app_db import seed_reference_tables, upgrade  # noqa: E402
from enrichment_assets.reference import REFERENCE_TABLES, SEEDS_DIR  # noqa: E402
from tests.factories import conversation, message, write_jsonl  # noqa: E402
from tests.llm_server import LoopbackLLMServer  # noqa: E402
from tests.object_store import S3Server, running_s3_server  # noqa: E402
from tests.postgres import PG_SERVER  # noqa: E402
from tests.worker_pool import Cluster  # noqa: E402

_STATS = "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database"


@dataclass
class Exports:
    digests: dict[str, str]  # export file (relative to the lake) -> SHA-256
    ids: int  # conversation ids in the enriched exports
    distinct_ids: int


@dataclass
class Side:
    workers: int
    store: str  # "local" or "s3"
    seconds: float
    cpu_s: float
    peak_rss_kib: int  # the workers' process trees, summed
    store_peak_rss_kib: int  # the SeaweedFS server (0 on a local folder)
    transactions: int
    rows_written: int
    lake_files: int  # files written to the lake folder, or objects added to the store
    lake_bytes: int
    lake_folders: dict[str, int]  # files written, by folder (two levels under the lake)
    exports: Exports
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


def _export_digests(lake_dir: Path) -> Exports:
    """Each per-batch export file's SHA-256, and the conversation ids of the enriched
    exports, read line by line."""
    digests: dict[str, str] = {}
    ids: list[str] = []
    for path in sorted((lake_dir / "export").rglob("*.jsonl")):
        name = str(path.relative_to(lake_dir))
        digest = hashlib.sha256()
        with path.open("rb") as lines:
            for line in lines:
                digest.update(line)
                if name.startswith("export/enriched/"):
                    ids.append(orjson.loads(line)["conversation_id"])
        digests[name] = digest.hexdigest()
    return Exports(digests, len(ids), len(set(ids)))


class _Peak:
    """The peak of RSS summed over process trees, sampled every second in a thread."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.kib = pids, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(1.0):
            self.kib = max(self.kib, sum(_tree_rss_kib(pid) for pid in self.pids if pid))

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.kib


@contextlib.contextmanager
def _progress(dagster_url: str, started: float, every_s: float = 60) -> Iterator[None]:
    """A line every `every_s` seconds: the runs that have succeeded so far."""
    done = threading.Event()

    def say() -> None:
        while not done.wait(every_s):
            with contextlib.suppress(psycopg.Error), psycopg.connect(dagster_url) as conn:
                (n,) = conn.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'").fetchone()
                print(f"    {time.monotonic() - started:7.0f} s: {n} runs succeeded", flush=True)

    thread = threading.Thread(target=say, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _lake_env(root: Path, store: str, server: S3Server | None) -> dict[str, str]:
    if store == "local":
        return {"ENRICH_DATA_DIR": str(root / "lake")}
    assert server is not None
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    server.create_bucket(bucket)
    return server.env(f"s3://{bucket}/lake")


def _lake_written(cluster: Cluster, before: dict[str, int]) -> dict[str, int]:
    """What the lake holds that it did not hold in `before`: path -> bytes (relative)."""
    if cluster.on_object_store:
        root = cluster.store().location().root  # type: ignore[union-attr]
        now = {k.removeprefix(root).lstrip("/"): n for k, n in cluster.store_objects().items()}
    else:
        lake_dir = cluster.working_copy("operator")
        now = {
            str(p.relative_to(lake_dir)): p.stat().st_size
            for p in lake_dir.rglob("*")
            if p.is_file()
        }
    return {k: n for k, n in now.items() if k not in before}


def _backfill(cluster: Cluster, workers: int, store_pid: int) -> tuple[float, float, int, int]:
    """Start the workers, wait for them: (wall s, CPU s, peak KiB, store peak KiB)."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    processes = [cluster.start_worker(f"worker-{i}") for i in range(workers)]
    peak, store_peak = _Peak([p.pid for p in processes]), _Peak([store_pid])
    with _progress(cluster.dagster_pg_url, started), ThreadPoolExecutor(workers) as pool:
        outputs = list(pool.map(lambda p: p.communicate(timeout=6 * 3600), processes))
    seconds = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            raise SystemExit(f"a worker failed ({process.returncode}): {stderr[-2000:]}")
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    return seconds, cpu, peak.stop(), store_peak.stop()


def _side(
    root: Path,
    files: list[Path],
    workers: int,
    store: str,
    server: S3Server | None,
    created: list[str],
) -> Side:
    app = _database("app", created)
    upgrade(app)
    seed_reference_tables(app, SEEDS_DIR, REFERENCE_TABLES)
    dagster = _database("dagster", created)
    with LoopbackLLMServer() as llm:
        cluster = Cluster(root, dagster, app, _lake_env(root, store, server), llm.base_url)
        cluster.land(files)
        before_pg = _pg_stats([app, dagster])
        before_lake = _lake_written(cluster, {})
        store_pid = server.pid if server is not None and store == "s3" else 0
        seconds, cpu, peak, store_peak = _backfill(cluster, workers, store_pid)
        paid = dict(llm.counters.successes)
    transactions, rows = (a - b for a, b in zip(_pg_stats([app, dagster]), before_pg, strict=True))
    written = _lake_written(cluster, before_lake)
    with cluster.synced("reader") as lake:
        exports = _export_digests(lake.data_dir)
    return Side(
        workers=workers,
        store=store,
        seconds=seconds,
        cpu_s=cpu,
        peak_rss_kib=peak,
        store_peak_rss_kib=store_peak,
        transactions=transactions,
        rows_written=rows,
        lake_files=len(written),
        lake_bytes=sum(written.values()),
        lake_folders=dict(Counter("/".join(Path(k).parts[:2]) for k in written)),
        exports=exports,
        paid=paid,
    )


def _check(one: Side, many: Side, conversations: int) -> None:
    assert many.exports.digests == one.exports.digests, "the exports differ from a single worker's"
    for side in (one, many):
        assert side.exports.ids == side.exports.distinct_ids == conversations, (
            f"{side.workers} worker(s): a conversation exported twice or lost"
        )
    assert set(many.paid) == set(one.paid) and set(many.paid.values()) == {1}, "paid twice"
    assert len(many.paid) == conversations, "a conversation not paid for"


def _report(side: Side, partitions: int, conversations: int) -> None:
    store = "a local folder" if side.store == "local" else "s3:// (SeaweedFS)"
    written = "lake files" if side.store == "local" else "objects"
    print(
        f"{side.workers} worker(s) on {store}: {side.seconds:7.1f} s wall"
        f" ({conversations / side.seconds:.1f} conversations/s)  CPU {side.cpu_s:6.1f} s"
        f" ({side.cpu_s / partitions:.2f} s/partition,"
        f" {side.cpu_s / conversations * 1000:.2f} ms/conversation)"
    )
    store_peak = (
        f", SeaweedFS {side.store_peak_rss_kib / 1024:.0f} MiB" if side.store == "s3" else ""
    )
    print(f"    peak memory: workers {side.peak_rss_kib / 1024:.0f} MiB (RSS summed){store_peak}")
    print(
        f"    written: {side.lake_files} {written}, {side.lake_bytes / 1e6:.1f} MB;"
        f" per partition: {side.transactions / partitions:.0f} PostgreSQL transactions, "
        f"{side.rows_written / partitions:.0f} rows written, {side.lake_files / partitions:.1f} "
        f"{written} ({side.lake_bytes / partitions / 1024:.1f} KiB); per conversation: "
        f"{side.transactions / conversations:.1f} transactions, "
        f"{len(side.paid) / conversations:.2f} LLM requests"
    )
    folders = sorted(side.lake_folders.items(), key=lambda item: -item[1])
    print(f"    {written} by folder: " + ", ".join(f"{k} {v}" for k, v in folders), flush=True)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=40)
    parser.add_argument("--per-partition", type=int, default=5)
    parser.add_argument(
        "--conversations", type=int, default=0, help="in all (sets --per-partition)"
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--store", choices=("local", "s3"), default="local", help="N workers'")
    parser.add_argument("--baseline-store", choices=("local", "s3"), default="local")
    parser.add_argument("--chars", type=int, default=0, help="characters per conversation")
    args = parser.parse_args()
    if args.conversations:
        args.per_partition = -(-args.conversations // args.partitions)
    return args


def main() -> None:
    args = _arguments()
    conversations = args.partitions * args.per_partition
    created: list[str] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp,
            contextlib.ExitStack() as stack,
        ):
            root = Path(tmp)
            server = None
            if "s3" in (args.store, args.baseline_store):
                (root / "weed").mkdir()
                server = stack.enter_context(running_s3_server(root / "weed"))
            files = _inputs(root / "input", args.partitions, args.per_partition, args.chars)
            print(
                f"{args.partitions} partitions x {args.per_partition} conversations"
                f" (~{args.chars} characters each)",
                flush=True,
            )
            many = _side(root / "many", files, args.workers, args.store, server, created)
            _report(many, args.partitions, conversations)
            one = _side(root / "one", files, 1, args.baseline_store, server, created)
            _report(one, args.partitions, conversations)
            ratio = many.seconds / one.seconds
            print(f"{args.workers} workers / 1: wall ratio {ratio:.2f} (speed-up {1 / ratio:.2f}x)")
            _check(one, many, conversations)
            print("checked: exports byte-identical, no id twice, each conversation paid once")
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            for name in created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
