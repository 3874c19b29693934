"""Benchmark: `enrich run` against a faulty OpenAI-compatible endpoint (issue 16's scenario).

    uv run python benchmarks/bench_llm_faults.py [--conversations 300] [--permanent 10]

One input file (300 conversations of 30 users on one day, so the daily summaries
run too), run with the `openai` enricher and the default settings against the
loopback server (its own process): 200 ms latency, 20 % of requests 429 with
`Retry-After: 1`, 10 % of first attempts 500. One after the other, each in a fresh
data folder and Dagster instance:

1. baseline: no conversation fails for good; then its rerun (`enrich run` of the
   same file again, in the same folder: every answer from the cache);
2. permanent: 10 of the same conversations always get 500 (and so do the daily
   summaries of their users, whose text holds theirs); then its rerun;
3. huge bodies: those 10 answer 50 MB chunked bodies instead (the body cap).

Prints each wall time, its ratio to the baseline (target <= 1.5 for 2 and its
rerun; the rerun also against the baseline's rerun), the
peak memory of the run's process tree (target < 500 MB), the chat requests the
server saw, the answers it had to send twice (over the run and its rerun; target 0)
and the enriched documents with NULL annotations.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for `tests.*`
sys.path.insert(0, str(ROOT / "benchmarks"))

import orjson  # noqa: E402
from bench_pipeline import timed  # noqa: E402

from tests.factories import conversation, message, write_jsonl  # noqa: E402
from tests.llm_server import Faults, LoopbackLLMServer  # noqa: E402

MARKER = "BENCH-PERMANENT-FAILURE"
KEY = "bench-loopback-key"


def _serve(commands: Connection) -> None:
    """The loopback server, reconfigured and read through `commands`."""
    with LoopbackLLMServer() as server:
        commands.send(server.base_url)
        while (command := commands.recv()) != "stop":
            if command == "counters":
                counters = server.counters
                commands.send(
                    {
                        "chat_requests": counters.chat_requests,
                        "paid_twice": len(counters.paid_twice()),
                        "faults": dict(counters.faults),
                    }
                )
            else:
                faults, keep_counters = command
                server.configure(Faults(**faults), keep_counters=keep_counters)
                commands.send("ok")


def write_input(path: Path, count: int, permanent: int) -> Path:
    """`count` conversations of 30 users on 2024-06-01; `permanent` of them marked."""
    step = max(1, count // max(1, permanent))
    records = []
    for i in range(count):
        marker = f" {MARKER}" if permanent and i % step == 0 and i // step < permanent else ""
        minute = f"{10 + i // 60:02d}:{i % 60:02d}"
        records.append(
            conversation(
                user_id=f"user-{i % 30:03d}",
                created_at=f"2024-06-01T{minute}:00Z",
                messages=[
                    message(
                        "user",
                        f"How do I fix problem {i} with my order?{marker}",
                        timestamp=f"2024-06-01T{minute}:00Z",
                    ),
                    message(
                        "assistant",
                        f"Open the orders page and follow step {i}.",
                        timestamp=f"2024-06-01T{minute}:30Z",
                    ),
                ],
            )
        )
    return write_jsonl(path, records)


def null_annotations(data_dir: Path) -> int:
    """Enriched documents whose annotation failed (NULL fields, an error)."""
    failed = 0
    for export in (data_dir / "export" / "enriched").glob("*.jsonl"):
        for line in export.read_bytes().splitlines():
            failed += orjson.loads(line)["enrichment"]["error"] is not None
    return failed


def enriched_llm_seconds(home: Path) -> float:
    """What the latest `enriched_conversations` materialization spent annotating."""
    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(AssetKey("enriched_conversations"))
    if event is None or event.asset_materialization is None:
        return float("nan")
    value = event.asset_materialization.metadata.get("llm_elapsed_s")
    return float(value.value) if value is not None else float("nan")  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--permanent", type=int, default=10)
    args = parser.parse_args()

    commands, theirs = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(theirs,))
    server.start()
    base_url = commands.recv()

    def ask(command: Any) -> Any:
        commands.send(command)
        return commands.recv()

    noise = {"seed": 16, "latency_s": 0.2, "rate_429": 0.2, "retry_after": "1"}
    noise["first_attempt_rate_500"] = 0.1
    huge = {"huge_body_bytes": 50 * 1024 * 1024}
    # (name, data folder, faults, a rerun: the server's counters go on from the run before)
    scenarios = [
        ("baseline", "a", {}, False),
        ("baseline, rerun", "a", {}, True),
        ("permanent", "b", {"targeted": {MARKER: "status_500"}}, False),
        ("permanent, rerun", "b", {"targeted": {MARKER: "status_500"}}, True),
        ("huge bodies", "c", {"targeted": {MARKER: "body_huge_unsized"}, **huge}, False),
    ]
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-llm-faults-") as tmp:
            work = Path(tmp)
            source = write_input(work / "conversations.jsonl", args.conversations, args.permanent)
            requests_before = 0
            for name, folder, faults, rerun in scenarios:
                ask(({**noise, **faults}, rerun))
                requests_before = requests_before if rerun else 0
                data_dir, home = work / folder / "data", work / folder / "home"
                home.mkdir(parents=True, exist_ok=True)
                (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
                env = {
                    **os.environ,
                    "ENRICH_DATA_DIR": str(data_dir),
                    "DAGSTER_HOME": str(home),
                    "ENRICH_ENRICHER": "openai",
                    "ENRICH_LLM_BASE_URL": base_url,
                    "ENRICH_LLM_API_KEY": KEY,
                }
                command = [str(Path(sys.executable).parent / "enrich"), "run", str(source)]
                wall, own_kib, tree_kib = timed(command, env)
                counters = ask("counters")
                requests = counters["chat_requests"] - requests_before
                requests_before = counters["chat_requests"]
                rows.append(
                    (
                        name,
                        wall,
                        enriched_llm_seconds(home),
                        own_kib / 1024,
                        tree_kib / 1024,
                        requests,
                        counters,
                        null_annotations(data_dir),
                    )
                )
    finally:
        commands.send("stop")
        server.join(timeout=30)

    baseline, baseline_rerun = rows[0][1], rows[1][1]
    print(
        f"enrich run, {args.conversations} conversations, {args.permanent} failing for good; "
        "latency 200 ms, 20 % 429 (Retry-After: 1), 10 % 500 on first attempts"
    )
    print(
        f"{'scenario':18s} {'wall s':>7s} {'ratio':>6s} {'LLM s':>6s} {'peak MB':>8s} "
        f"{'tree MB':>8s} {'requests':>9s} {'paid twice':>10s} {'NULL':>5s}"
    )
    for name, wall, llm_s, own_mb, tree_mb, requests, counters, failed in rows:
        print(
            f"{name:18s} {wall:7.1f} {wall / baseline:6.2f} {llm_s:6.1f} {own_mb:8.0f} "
            f"{tree_mb:8.0f} {requests:9d} {counters['paid_twice']:10d} {failed:5d}"
        )
    print(f"permanent, rerun / baseline, rerun: {rows[3][1] / baseline_rerun:.2f}")
    print(
        "LLM s: what enriched_conversations spent annotating (summaries not included); "
        "peak MB: the `enrich` process; tree MB: it and its worker processes, RSS summed"
    )
    print(
        "targets: ratio <= 1.5 for 'permanent' and its rerun; peak < 500 MB; paid twice 0; "
        f"NULL = the {args.permanent} failing conversations"
    )
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average: {load} on {os.cpu_count()} CPUs (other processes share them)")


if __name__ == "__main__":
    main()
