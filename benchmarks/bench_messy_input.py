"""Benchmark: peak memory of `enrich run` on messy input, against a clean baseline.

    uv run python benchmarks/bench_messy_input.py [--lines 1000000] [--line-mb 200]

Three `enrich run --no-summaries` commands, each in a fresh data folder and Dagster
instance, measured the same way (wall time; peak memory of the command and its
worker processes, RSS summed, sampled every 100 ms: see `bench_pipeline.timed`):

- baseline: 1,000 valid conversations (the memory of the stack itself);
- invalid lines: `--lines` lines that are not JSON (4 bytes each: a 4 MB file whose
  every line becomes a raw row and a quarantined record), target <= 600 MB;
- one long line: a single line of `--line-mb` MB, over the 16 MiB record limit: it
  must be measured and rejected while it streams by, never held, target <= 1 GB.

Prints each case's time and peak memory, and its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import timed  # the same measurement as the pipeline benchmark

TARGETS_MIB = {"invalid lines": 600, "one long line": 1024}


def _invalid_lines(path: Path, lines: int) -> Path:
    with path.open("wb") as out:
        block = b"{x}\n" * 10_000
        for _ in range(lines // 10_000):
            out.write(block)
        out.write(b"{x}\n" * (lines % 10_000))
    return path


def _one_long_line(path: Path, megabytes: int) -> Path:
    """`{"conversation_id": ..., "messages": [{"content": "aaaa..."}]}` on one line."""
    with path.open("wb") as out:
        out.write(b'{"messages": [{"role": "user", "content": "')
        chunk = b"a" * (1 << 20)
        for _ in range(megabytes):
            out.write(chunk)
        out.write(b'"}, {"role": "assistant", "content": "ok"}]}\n')
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--line-mb", type=int, default=200)
    args = parser.parse_args()

    from enrichment_assets.sample_data import write_sample_files

    with tempfile.TemporaryDirectory(prefix="enrich-bench-messy-") as tmp:
        work = Path(tmp)
        (baseline,) = write_sample_files(work / "baseline", 1000, files=1, seed=3)
        cases = {
            "baseline": baseline,
            "invalid lines": _invalid_lines(work / "invalid.jsonl", args.lines),
            "one long line": _one_long_line(work / "long.jsonl", args.line_mb),
        }
        enrich = str(Path(sys.executable).with_name("enrich"))
        measured = {}
        for name, path in cases.items():
            out = work / name.replace(" ", "-")
            (out / "dagster").mkdir(parents=True)
            env = {
                **os.environ,
                "GX_ANALYTICS_ENABLED": "false",
                "ENRICH_DATA_DIR": str(out / "data"),
                "DAGSTER_HOME": str(out / "dagster"),
            }
            seconds, _, tree_kib = timed([enrich, "run", "--no-summaries", str(path)], env)
            measured[name] = (seconds, tree_kib / 1024)
            size = path.stat().st_size / 1e6
            print(
                f"{name:14s} {size:8.1f} MB input  {seconds:7.1f} s  "
                f"peak {tree_kib / 1024:7.0f} MiB (the run and its workers)"
            )
        base_seconds, base_mib = measured["baseline"]
        for name, target in TARGETS_MIB.items():
            seconds, mib = measured[name]
            print(
                f"{name:14s} memory / baseline = {mib / base_mib:.2f}  "
                f"time / baseline = {seconds / base_seconds:.2f}  "
                f"peak {mib:.0f} MiB (target <= {target}: {'ok' if mib <= target else 'OVER'})"
            )


if __name__ == "__main__":
    main()
