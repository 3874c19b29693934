"""Benchmark: how long a crashed `enrich run` takes to come back to the clean result.

    uv run python benchmarks/bench_crash_recovery.py --conversations 15000

For each crash point of `enrichment_assets.faults` (kill -9 at landing, after each layer,
while exports are written, during the summaries) and for SIGINT and SIGTERM: run
`enrich run` on the same files in a fresh data folder, break it there, then time the one
plain `enrich run` that recovers it, and check that its exports equal a clean run's byte
for byte (summary lines without `generated_at`). The clean run's own time is the
baseline: each recovery is printed as a ratio to it. With the daemon instead of a plain
rerun, add the sensor's detection (next tick for a dead pid on the same host, 120 s
without heartbeat elsewhere) and the first backoff (60 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from enrichment_assets.sample_data import write_sample_files

ENRICH = str(Path(sys.executable).with_name("enrich"))
POINTS = ("landing", "raw", "validated", "enriched", "normalized", "exports", "summaries")


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "ENRICH_DATA_DIR": str(data_dir), "GX_ANALYTICS_ENABLED": "false"}
    for name in ("DAGSTER_HOME", "ENRICH_LANDING_DIR", "ENRICH_APP_DB_URL"):
        env.pop(name, None)
    return {**env, **extra}


def _run(files: list[Path], data_dir: Path, **extra: str) -> tuple[int, float]:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    done = subprocess.run(
        [ENRICH, "run", *map(str, files)],
        env=_env(data_dir, **extra),
        cwd=data_dir.parent,
        capture_output=True,
        start_new_session=True,
        check=False,
    )
    return done.returncode, time.monotonic() - began


def _interrupted(files: list[Path], data_dir: Path, sig: signal.Signals) -> tuple[int, float]:
    """Signal the run's process group once it is enriching; (exit code, seconds to stop)."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    marker = data_dir.parent / "paused"
    process = subprocess.Popen(
        [ENRICH, "run", *map(str, files)],
        env=_env(data_dir, ENRICH_TEST_PAUSE_AT="enriched", ENRICH_TEST_PAUSE_FILE=str(marker)),
        cwd=data_dir.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while not marker.exists() and process.poll() is None:
        time.sleep(0.1)
    os.killpg(process.pid, sig)
    sent = time.monotonic()
    code = process.wait(timeout=120)
    return code, time.monotonic() - sent


def _exports(data_dir: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted((data_dir / "export").rglob("*.jsonl")):
        data = path.read_bytes()
        if path.parent.name == "summaries":
            data = b"\n".join(
                orjson.dumps({k: v for k, v in orjson.loads(line).items() if k != "generated_at"})
                for line in data.splitlines()
            )
        files[str(path.relative_to(data_dir))] = data
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=15_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="enrich-bench-crash-"))
    try:
        files = write_sample_files(
            root / "in", args.conversations, files=2, formats=("jsonl", "openai_jsonl")
        )
        code, clean_s = _run(files, root / "clean" / "data")
        assert code == 0, "the clean run failed"
        reference = _exports(root / "clean" / "data")
        print(f"clean run: {clean_s:.1f} s ({args.conversations} conversations, 2 files)")
        scenarios: list[tuple[str, dict[str, str] | signal.Signals]] = [
            (f"kill -9 at {p}", {"ENRICH_TEST_CRASH_AT": p}) for p in POINTS
        ] + [("SIGINT", signal.SIGINT), ("SIGTERM", signal.SIGTERM)]
        print(f"{'scenario':<26}{'broken run':>12}{'recovery':>10}{'ratio':>7}  exports")
        for name, how in scenarios:
            data_dir = root / name.replace(" ", "_") / "data"
            began = time.monotonic()
            if isinstance(how, dict):
                broken = _run(files, data_dir, **how)[0]
            else:
                broken, stop_s = _interrupted(files, data_dir, how)
                print(f"{name}: stopped {stop_s:.1f} s after the signal (meant: within 5 s)")
            broken_s = time.monotonic() - began
            code, recovery_s = _run(files, data_dir)
            same = "identical" if code == 0 and _exports(data_dir) == reference else "DIFFERENT"
            print(
                f"{name:<26}{broken_s:>10.1f} s{recovery_s:>8.1f} s"
                f"{recovery_s / clean_s:>7.2f}  {same} (exit {broken} then {code})"
            )
            shutil.rmtree(data_dir.parent, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
