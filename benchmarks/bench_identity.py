"""Benchmark: what the identity work adds to a 100,000-conversation `enrich run`.

    uv run python benchmarks/bench_identity.py --conversations 100000

Runs `enrich run --no-summaries FILE` once in a fresh data folder and Dagster instance
(the baseline: the whole run, identity included), then times, in this process and on that
run's own layers, every piece of work the identity adds to a run:

- hashing each valid record's canonical JSON (`record_hash`, done in the validation
  workers: timed here on one core, so an upper bound);
- resolving and registering the partition in an index that is empty (the first batch)
  and in one that already holds the same 100,000 ids (the same file landed again: every
  record is a duplicate, the most the resolution ever has to match);
- finding the partition's stale rows (before its exports) and writing its exports with
  an exclusion list, against writing them without one.

Prints each piece, their sum and the sum as a percentage of the run (target <= 5 %).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq


def _timed(label: str, fn, results: dict[str, float]) -> object:
    start = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - start
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    args = parser.parse_args()

    from enrichment_assets.exports import write_exports
    from enrichment_assets.identity import BATCH_COLUMNS, IdentityIndex
    from enrichment_assets.lake import Lake
    from enrichment_assets.sample_data import write_sample_files

    with tempfile.TemporaryDirectory(prefix="enrich-bench-identity-") as tmp:
        work = Path(tmp)
        (src,) = write_sample_files(
            work / "input", args.conversations, files=1, seed=11, defect_rate=0.02
        )
        print(f"input: {args.conversations} conversations, {src.stat().st_size / 1e6:.0f} MB")
        env = {
            **os.environ,
            "GX_ANALYTICS_ENABLED": "false",
            "ENRICH_DATA_DIR": str(work / "data"),
            "DAGSTER_HOME": str(work / "dagster"),
        }
        (work / "dagster").mkdir()
        (work / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        enrich = str(Path(sys.executable).with_name("enrich"))
        start = time.perf_counter()
        subprocess.run(
            [enrich, "run", "--no-summaries", str(src)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        run_s = time.perf_counter() - start

        lake = Lake(work / "data")
        (partition,) = [p.stem for p in (work / "data" / "lake" / "validated").glob("*.parquet")]
        validated = pl.from_arrow(
            pq.read_table(lake.layer_path("validated", partition), columns=list(BATCH_COLUMNS))
        )
        records = pq.read_table(lake.layer_path("raw", partition), columns=["record_json"])
        jsons = [s.encode() for s in records["record_json"].to_pylist() if s is not None]

        pieces: dict[str, float] = {}
        _timed(
            "record_hash (one core)",
            lambda: [hashlib.sha256(j).hexdigest() for j in jsons],
            pieces,
        )
        scratch = Lake(work / "scratch")
        index = IdentityIndex(scratch)
        landed = datetime.now(UTC)
        _timed(
            "resolve + register, empty index",
            lambda: index.resolve_and_register("first", landed, validated),  # type: ignore[arg-type]
            pieces,
        )
        again = _timed(
            "resolve + register, all duplicates",
            lambda: index.resolve_and_register("second", datetime.now(UTC), validated),  # type: ignore[arg-type]
            pieces,
        )
        _timed("stale rows before exports", lambda: index.stale_rows("first"), pieces)
        # The exclusion list names as many records as the partition holds, none of them in
        # it: the same lines are written, so the difference is the cost of the filter alone.
        # Best of three of each, alternated, on a machine that may be busy.
        excluded = range(validated.height + 1, 2 * validated.height + 1)
        plain_s, excluding_s = [], []
        for _ in range(3):
            began = time.perf_counter()
            write_exports(lake, partition)
            plain_s.append(time.perf_counter() - began)
            began = time.perf_counter()
            write_exports(lake, partition, excluded)
            excluding_s.append(time.perf_counter() - began)
        pieces["exports, with an exclusion list"] = min(excluding_s) - min(plain_s)

        print(f"enrich run --no-summaries: {run_s:.1f} s")
        print(f"duplicates found when the same file lands again: {again.height}")  # type: ignore[attr-defined]
        for label, seconds in pieces.items():
            print(f"  {label:38s} {seconds:6.2f} s")
        # The two resolutions are alternatives (a batch is either new or repeated): count
        # the dearer one.
        resolution = max(
            pieces["resolve + register, empty index"], pieces["resolve + register, all duplicates"]
        )
        added = (
            pieces["record_hash (one core)"]
            + resolution
            + pieces["stale rows before exports"]
            + max(pieces["exports, with an exclusion list"], 0.0)
        )
        print(
            f"identity work: {added:.2f} s = {100 * added / run_s:.1f} % of the run (target <= 5 %)"
        )


if __name__ == "__main__":
    main()
