"""Benchmark: `enrich run` against a floor and a naive loop, on the same files, in one run.

    uv run python benchmarks/bench_pipeline.py --conversations 100000

- project: `enrich run --no-summaries FILE` in a fresh data folder and Dagster
  instance: the four layers, their checks (GX gates included) and exports; with
  `--summaries`, also the daily summaries of the days the file covers;
- floor: the least any tool must pay on this input: importing the required stack,
  DuckDB `read_json` -> Parquet, and one orjson loads/dumps pass over every record;
- naive: a one-record-at-a-time Python loop (json.loads, hand validation, one
  json.dump per conversation), which does no enrichment at all.

Prints each wall time (median of --repeat runs), project / floor, naive / project,
the peak RSS of each command's process and the peak memory of its process tree (the
project's worker processes included: RSS summed, an upper bound).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOOR = textwrap.dedent(
    """
    import sys, duckdb, orjson
    import dagster, great_expectations, polars, pydantic  # the required stack
    src, out = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT * FROM read_json(?, format = 'newline_delimited', ignore_errors = true))"
        " TO ? (FORMAT parquet)", [src, out + '/floor.parquet'])
    with open(src, 'rb') as f, open(out + '/floor.jsonl', 'wb') as w:
        for line in f:
            try:
                w.write(orjson.dumps(orjson.loads(line)) + b'\\n')
            except orjson.JSONDecodeError:
                pass
    """
)

NAIVE = textwrap.dedent(
    """
    import json, sys, uuid, os
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out + '/naive', exist_ok=True)
    ok = bad = 0
    with open(src, encoding='utf-8') as f:
        for line in f:
            try:
                rec = json.loads(line)
                uuid.UUID(str(rec['conversation_id']))
                msgs = rec['messages']
                roles = {m['role'] for m in msgs}
                assert roles <= {'system', 'user', 'assistant'}
                assert 'user' in roles and 'assistant' in roles
                assert all(isinstance(m['content'], str) and m['content'].strip() for m in msgs)
            except Exception:
                bad += 1
                continue
            with open(f"{out}/naive/{rec['conversation_id']}.json", 'w') as w:
                json.dump(rec, w)
            ok += 1
    print(ok, bad)
    """
)


def _descendants(pid: int) -> list[tuple[int, int | None]]:
    """(process, its parent) for `pid` and every process below it, from /proc (Linux)."""
    found: list[tuple[int, int | None]] = []
    queue: list[tuple[int, int | None]] = [(pid, None)]
    while queue:
        current, parent = queue.pop()
        found.append((current, parent))
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                queue.extend((int(c), current) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def _command_line(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _tree_rss_kib(pid: int) -> int:
    """RSS summed over a process tree: an upper bound of its memory (a page that two
    processes share counts twice). From /proc/*/statm, which costs the process nothing
    (smaps would walk its page tables under its memory lock).

    A child still running its parent's command line is a fork not yet past `exec`
    (`subprocess` starting a program): its pages are its parent's (vfork shares them,
    fork copies them only on write), so it is not counted a second time.
    """
    total = 0
    for member, parent in _descendants(pid):
        if parent is not None and _command_line(member) == _command_line(parent):
            continue
        try:
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1]) * _PAGE_KIB
        except (OSError, IndexError, ValueError):
            continue
    return total


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Wall seconds, peak RSS (KiB) of the child itself, and peak memory (KiB) of the
    whole process tree (RSS summed over the child and its worker processes, sampled
    every 100 ms)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_tree = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not done.wait(0.1):
            peak_tree = max(peak_tree, _tree_rss_kib(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}): {stderr.strip()[-500:]}")
    return elapsed, usage.ru_maxrss, max(peak_tree, usage.ru_maxrss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--summaries", action="store_true", help="time `enrich run` with the daily summaries"
    )
    args = parser.parse_args()

    from enrichment_assets.sample_data import write_sample_files

    with tempfile.TemporaryDirectory(prefix="enrich-bench-") as tmp:
        work = Path(tmp)
        (src,) = write_sample_files(
            work / "input", args.conversations, files=1, seed=11, defect_rate=0.02
        )
        size_mb = src.stat().st_size / 1e6
        print(f"input: {args.conversations} conversations, {size_mb:.0f} MB JSONL")
        base_env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
        results: dict[str, list[tuple[float, int, int]]] = {
            "project": [],
            "floor": [],
            "naive": [],
        }
        for i in range(args.repeat):
            out = work / f"out-{i}"
            out.mkdir()
            env = {
                **base_env,
                "ENRICH_DATA_DIR": str(out / "data"),
                "DAGSTER_HOME": str(out / "dagster"),
            }
            (out / "dagster").mkdir()
            enrich = str(Path(sys.executable).with_name("enrich"))
            flag = "--summaries" if args.summaries else "--no-summaries"
            results["project"].append(timed([enrich, "run", flag, str(src)], env))
            results["floor"].append(timed([sys.executable, "-c", FLOOR, str(src), str(out)], env))
            results["naive"].append(timed([sys.executable, "-c", NAIVE, str(src), str(out)], env))
        wall = {k: statistics.median(t for t, _, _ in v) for k, v in results.items()}
        rss = {k: max(r for _, r, _ in v) for k, v in results.items()}
        tree = {k: max(m for _, _, m in v) for k, v in results.items()}
        for name in ("project", "floor", "naive"):
            runs = ", ".join(f"{t:.1f}" for t, _, _ in results[name])
            print(
                f"{name:8s} {wall[name]:8.1f} s (runs: {runs})   peak RSS {rss[name] / 1024:7.0f}"
                f" MiB   with its workers {tree[name] / 1024:7.0f} MiB"
            )
        print(f"project / floor = {wall['project'] / wall['floor']:.2f}  (target <= 5)")
        print(f"naive / project = {wall['naive'] / wall['project']:.2f}  (target > 1)")
        print(
            f"project peak memory = {tree['project'] / 1024:.0f} MiB, the process and its "
            "workers, RSS summed  (target < 3072)"
        )


if __name__ == "__main__":
    main()
