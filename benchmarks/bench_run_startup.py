"""Benchmark: what one more Dagster run costs `enrich run` beside the work of its steps.

    uv run python benchmarks/bench_run_startup.py --partitions 6 --conversations 60

In a fresh data folder and Dagster instance, in one process as `enrich run` does: lands P
small generated batches and runs each through the four layers (`materialize_partitions`,
one in-process run per partition), then the summary days they cover (one run over their
range). For each run, its wall time and the part of it spent outside its steps (the run's
start-up and end: creating it, resolving config and resources, building the plan, its
events), from the run's own step events. The first run pays the process's one-off
warm-ups; the others are what one more partition costs. Prints seconds; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def _inside_steps(instance: object, run_id: str) -> float:
    """Seconds spent inside the run's steps, from their STEP_START / STEP_SUCCESS events."""
    from dagster import DagsterEventType

    starts: dict[str, float] = {}
    inside = 0.0
    for record in instance.get_records_for_run(run_id, limit=100_000).records:  # type: ignore[attr-defined]
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = record.event_log_entry.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            inside += record.event_log_entry.timestamp - starts.pop(event.step_key)
    return inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--conversations", type=int, default=60, help="per partition")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-run-startup-"))
    os.environ["ENRICH_DATA_DIR"] = str(root / "data")
    from dagster import instance_for_test

    from enrichment_assets.cli.runner import (
        land_files,
        materialize_partitions,
        materialize_summary_days,
    )
    from enrichment_assets.defs.summaries.automation import summary_days_of
    from enrichment_assets.lake import Lake
    from enrichment_assets.sample_data import write_sample_files

    lake = Lake(root / "data")
    files = [
        write_sample_files(root / "in" / str(i), args.conversations, seed=i)[0]
        for i in range(args.partitions)
    ]
    with instance_for_test() as instance:
        keys = land_files(lake, instance, files)
        rows = []
        for key in keys:
            start = time.perf_counter()
            (outcome,) = materialize_partitions(instance, [key])
            wall = time.perf_counter() - start
            assert outcome.success, outcome
            rows.append((key[:12], wall, wall - _inside_steps(instance, outcome.run_id)))
        days = summary_days_of(lake, keys)
        start = time.perf_counter()
        outcomes = materialize_summary_days(instance, days)
        wall = time.perf_counter() - start
        assert all(o.success for o in outcomes), outcomes
        summary_run = outcomes[0].run_id
        rows.append((f"{len(days)} days", wall, wall - _inside_steps(instance, summary_run)))
    print(f"{'run':14s} {'wall s':>7s} {'outside steps s':>16s}")
    for name, wall, outside in rows:
        print(f"{name:14s} {wall:7.2f} {outside:16.2f}")
    later = [outside for _, _, outside in rows[1:-1]]
    if later:
        print(
            f"one more partition's run costs {statistics.median(later):.2f} s outside its "
            f"steps (median of {len(later)}; the first run, with the warm-ups: {rows[0][2]:.2f} s)"
        )


if __name__ == "__main__":
    main()
