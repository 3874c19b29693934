"""Benchmark: what the GX quality gates add to each layer's time, on one big partition.

    uv run python benchmarks/bench_quality_gates.py --conversations 100000

Runs the whole pipeline on one partition of N generated conversations in a fresh
data folder and Dagster instance, and takes each layer's step time from the
run's events (the step includes its gate). Then, in the same process, re-runs
each layer's gate on the files that run wrote (GX already imported, like every
gate after the first in a run): the median of --repeat runs is the gate's cost.
The goal: gate <= 20 % of the layer's own time (step time minus gate).

GX's import is paid once per process (the first gate of a run); it is printed
apart, measured in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

LAYERS = {
    "raw_conversations": "raw",
    "validated_conversations": "validated",
    "enriched_conversations": "enriched",
    "normalized_conversations": "normalized",
}
BUDGET = 0.20


def gx_import_seconds() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import great_expectations"], check=True)
    return time.perf_counter() - started


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Each step's wall time, from its STEP_START and STEP_SUCCESS/FAILURE events."""
    starts, seconds = {}, {}
    for record in instance.get_records_for_run(run_id).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            seconds[event.step_key] = entry.timestamp - starts[event.step_key]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-gates-") as tmp:
        data_dir = Path(tmp) / "data"
        os.environ["ENRICH_DATA_DIR"] = str(data_dir)
        from dagster import DagsterInstance

        from enrichment_assets.cli.runner import land_files, materialize_partitions
        from enrichment_assets.defs.checks import validate_layer
        from enrichment_assets.lake import Lake
        from enrichment_assets.sample_data import write_sample_files

        print(f"GX import in a fresh interpreter: {gx_import_seconds():.2f} s")
        files = write_sample_files(Path(tmp) / "in", args.conversations, files=1)
        lake = Lake(data_dir)
        home = Path(tmp) / "dagster"
        home.mkdir()
        with DagsterInstance.local_temp(str(home)) as instance:
            partitions = land_files(lake, instance, files)
            started = time.perf_counter()
            (outcome,) = materialize_partitions(instance, partitions)
            print(f"pipeline: {time.perf_counter() - started:.1f} s, success={outcome.success}")
            steps = step_seconds(instance, outcome.run_id)

        print(f"\n{'layer':<26}{'rows':>9}{'step s':>9}{'gate s':>9}{'layer s':>9}{'gate %':>8}")
        worst = 0.0
        for asset, layer in LAYERS.items():
            path = lake.layer_path(layer, outcome.partition)
            gate_runs = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                report = validate_layer(lake, asset, path, outcome.partition)
                gate_runs.append(time.perf_counter() - began)
            gate = statistics.median(gate_runs)
            rows = report.check_results[0].metadata["rows_evaluated"].value
            own = steps[asset] - gate
            share = gate / own
            worst = max(worst, share)
            print(f"{asset:<26}{rows:>9}{steps[asset]:>9.2f}{gate:>9.2f}{own:>9.2f}{share:>8.1%}")
        verdict = "within" if worst <= BUDGET else "OVER"
        print(f"\nworst gate overhead {worst:.1%} ({verdict} the {BUDGET:.0%} budget)")


if __name__ == "__main__":
    main()
