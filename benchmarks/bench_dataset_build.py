"""Benchmark: the `training_dataset` build, changed and unchanged inputs, against a floor.

    uv run python benchmarks/bench_dataset_build.py --conversations 100000

Set-up (not timed): `enrich demo`'s sample files of N conversations (four files, JSON Lines
in the canonical and OpenAI formats) landed and run through the layers in a temporary data
folder and Dagster instance. Then, in the same process:

- floor: the least any dataset build pays on this lake: DuckDB reads the completed rows'
  messages from every normalized file (joined with the status files) and writes them as one
  OpenAI chat JSONL file;
- changed: `materialize_training_dataset` after its last publication and near-duplicate
  verdicts were forgotten (what `enrich run` pays after a new batch): every step, the GX
  gate, the publication;
- changed, same rows: its last publication forgotten, its verdicts kept (what `enrich run`
  pays after re-running batches whose content did not change): the near-duplicate verdicts
  are reused;
- unchanged: the same call again on the same inputs: the fingerprint of the inputs matches,
  the run reads and writes nothing; and as `enrich run` makes it, with no run launched;
- the steps of the changed build, one by one through the library (candidates, near
  duplicates, lines, staging, gate, publication), to show where the time goes.

Prints wall and CPU seconds of each, and changed / floor, unchanged / floor.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def timed(label: str, work: Callable[[], T], results: dict[str, tuple[float, float]]) -> T:
    wall, cpu = time.perf_counter(), _cpu()
    value = work()
    results[label] = (time.perf_counter() - wall, _cpu() - cpu)
    print(f"  {label:<28} {results[label][0]:8.2f} s wall {results[label][1]:8.2f} s CPU")
    return value


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def floor(data_dir: Path, out: Path) -> int:
    import duckdb

    with duckdb.connect() as con:
        con.execute(
            """
            COPY (
                SELECT {'messages': list_transform(n.messages,
                        lambda m: {'role': m.role, 'content': m.content})} AS line
                FROM read_parquet(?, union_by_name = true) AS n
                JOIN read_parquet(?, union_by_name = true) AS s USING (partition, record_index)
                WHERE s.status = 'completed'
            ) TO ? (FORMAT json)
            """,
            [
                str(data_dir / "lake" / "normalized" / "*.parquet"),
                str(data_dir / "lake" / "status" / "*.parquet"),
                str(out),
            ],
        )
    with out.open("rb") as handle:
        return sum(1 for _ in handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    os.environ["ENRICH_DATA_DIR"] = str(root / "data")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for name in ("ENRICH_LANDING_DIR", "ENRICH_ENRICHER", "ENRICH_PII_MODE"):
        os.environ.pop(name, None)

    from dagster import instance_for_test

    from enrichment_assets.cli.dataset_run import materialize_training_dataset
    from enrichment_assets.cli.runner import land_files, materialize_partitions
    from enrichment_assets.dataset.build import (
        DatasetSpec,
        assign_lines,
        dataset_partitions,
        remove_near_duplicates,
        select_candidates,
        stage_lines,
        verdicts_path,
    )
    from enrichment_assets.dataset.fingerprint import forget_publication, inputs_fingerprint
    from enrichment_assets.defs.checks import validate_layer
    from enrichment_assets.defs.dataset.assets import normalized_run_ids
    from enrichment_assets.lake import Lake
    from enrichment_assets.sample_data import write_sample_files
    from enrichment_assets.workers import default_workers, start_workers

    lake = Lake(root / "data")
    samples = root / "samples"
    samples.mkdir(parents=True)
    results: dict[str, tuple[float, float]] = {}
    with instance_for_test() as instance:
        print(f"set-up: {args.conversations} conversations through the layers ({root})")
        started = time.perf_counter()
        start_workers(default_workers())
        files = write_sample_files(
            samples,
            args.conversations,
            files=4,
            seed=args.seed,
            # JSON Lines only: every record is read (a JSON array file is one record under
            # the record-size limit, and over it at this size).
            formats=("jsonl", "openai_jsonl"),
        )
        partitions = land_files(lake, instance, files)
        outcomes = materialize_partitions(instance, partitions)
        assert all(o.success for o in outcomes), outcomes
        print(f"  set-up took {time.perf_counter() - started:.1f} s")

        print("timed:")
        lines = timed("floor", lambda: floor(lake.data_dir, root / "floor.jsonl"), results)
        build = lambda: materialize_training_dataset(instance)  # noqa: E731
        first = timed("changed (first build)", build, results)
        assert first.success and first.counts is not None, first
        forget_publication(lake, "default")
        verdicts_path(lake, "default").unlink()
        changed = timed("changed", build, results)
        assert changed.success and not changed.unchanged, changed
        forget_publication(lake, "default")  # as a batch re-run with the same content
        rerun = timed("changed, same rows", build, results)
        assert rerun.success and not rerun.unchanged, rerun
        unchanged = timed("unchanged", build, results)
        assert unchanged.success and unchanged.unchanged, unchanged
        unchanged = timed(
            "unchanged (as enrich run)",
            lambda: materialize_training_dataset(instance, run_when_unchanged=False),
            results,
        )
        assert unchanged.success and unchanged.unchanged, unchanged

        print("the changed build's steps, through the library:")
        spec = DatasetSpec()
        parts = dataset_partitions(lake)
        runs = timed("normalized run ids", lambda: normalized_run_ids(instance, parts), results)
        timed("fingerprint", lambda: inputs_fingerprint(lake, spec, parts, runs), results)
        candidates = timed(
            "candidates + exact dups", lambda: select_candidates(lake, parts, spec, runs), results
        )
        candidates, flagged, _ = timed(
            "near duplicates",
            lambda: remove_near_duplicates(lake, candidates, spec.near_duplicates),
            results,
        )
        kept = timed("split and lines", lambda: assign_lines(candidates, spec), results)
        staged = root / "staged.parquet"
        timed("staging (messages)", lambda: stage_lines(lake, kept, spec, staged), results)
        timed("GX gate", lambda: validate_layer(lake, "training_dataset", staged, "bench"), results)

    counts = changed.counts or {}
    print(
        f"\n{args.conversations} conversations, {counts.get('completed')} completed, "
        f"{counts.get('kept')} kept ({lines} lines in the floor's file), {flagged} LSH candidates"
    )
    floor_wall = results["floor"][0]
    for label in ("changed", "changed, same rows", "unchanged", "unchanged (as enrich run)"):
        wall, cpu = results[label]
        ratio = wall / floor_wall
        print(f"{label:>26}: {wall:7.2f} s wall, {cpu:7.2f} s CPU = {ratio:6.2f} x floor")
    print(f"{'floor':>26}: {floor_wall:7.2f} s wall, {results['floor'][1]:7.2f} s CPU")


if __name__ == "__main__":
    main()
