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
and the peak RSS of the project's process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
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


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}): {stderr.strip()[-500:]}")
    return elapsed, usage.ru_maxrss


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
        results: dict[str, list[tuple[float, int]]] = {"project": [], "floor": [], "naive": []}
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
        wall = {k: statistics.median(t for t, _ in v) for k, v in results.items()}
        rss = {k: max(r for _, r in v) for k, v in results.items()}
        for name in ("project", "floor", "naive"):
            print(f"{name:8s} {wall[name]:8.1f} s   peak RSS {rss[name] / 1024:7.0f} MiB")
        print(f"project / floor = {wall['project'] / wall['floor']:.2f}  (target <= 5)")
        print(f"naive / project = {wall['naive'] / wall['project']:.2f}  (target > 1)")
        print(f"project peak RSS = {rss['project'] / 1024:.0f} MiB  (target < 3072)")


if __name__ == "__main__":
    main()
