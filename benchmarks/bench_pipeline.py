"""Benchmark: what users run, as ratios to a floor measured on the same files in one run.

    uv run python benchmarks/bench_pipeline.py --conversations 100000
    uv run python benchmarks/bench_pipeline.py --conversations 20000     # while developing
    uv run python benchmarks/bench_pipeline.py --conversations 1000000 --files 10 --skip-ui

The same generated conversations (about 2 % defective) are written as one JSON Lines
file and as `--files` files (default 4). Each command runs in its own process, with a
fresh data folder and Dagster instance unless said otherwise:

- floor: the least any tool must pay on this input: importing the required stack,
  DuckDB `read_json` -> Parquet, and one orjson loads/dumps pass writing both exports;
- import the stack: the floor's imports alone (the unchanged rerun's yardstick);
- `enrich run FILE`: plain, as users run it (daily summaries, dataset, health included);
- `enrich run DIR`: the same conversations in `--files` files (one partition each);
- rerun unchanged: `enrich run DIR` again in the same data folder and instance;
- UI-style: one partition (the 1-file input, landed beforehand) materialized through
  the `conversations_pipeline` asset job with the instance's default executor
  (`dagster job execute`, as a run launched from the UI executes), compared with
  `enrich run --no-summaries --no-dataset FILE` for the same partition;
- naive (`--naive`): a one-record-at-a-time Python loop, no enrichment at all.

Prints each wall time (median of --repeat runs), its ratio to the floor, the peak RSS of
the command's process and the peak memory of its process tree (worker processes
included: RSS summed every 100 ms, an upper bound).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
    out, srcs = sys.argv[1], sys.argv[2:]
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT * FROM read_json(?, format = 'newline_delimited', ignore_errors = true))"
        " TO ? (FORMAT parquet)", [srcs, out + '/floor.parquet'])
    with open(out + '/floor.jsonl', 'wb') as docs, open(out + '/floor-chat.jsonl', 'wb') as chat:
        for src in srcs:
            with open(src, 'rb') as f:
                for line in f:
                    try:
                        record = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    docs.write(orjson.dumps(record) + b'\\n')
                    chat.write(orjson.dumps({'messages': record.get('messages')}) + b'\\n')
    """
)

# The floor's imports alone: what the unchanged rerun is compared with.
IMPORTS = "import duckdb, orjson, dagster, great_expectations, polars, pydantic"

# Lands FILE as a batch partition in the instance of DAGSTER_HOME and prints its key.
LAND = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from enrichment_assets.cli.instance import dagster_instance
    from enrichment_assets.lake import Lake
    from enrichment_assets.cli.runner import land_files
    lake = Lake(Path(sys.argv[1]))
    with dagster_instance() as instance:
        print(land_files(lake, instance, [Path(sys.argv[2])])[0])
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
        try:  # a process that ends while it is read has no task folder any more
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
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


def _environment(out: Path) -> dict[str, str]:
    """A fresh data folder and Dagster instance under `out`."""
    (out / "dagster").mkdir(parents=True)
    return {
        **os.environ,
        "GX_ANALYTICS_ENABLED": "false",
        "ENRICH_DATA_DIR": str(out / "data"),
        "DAGSTER_HOME": str(out / "dagster"),
    }


def _ui_style(out: Path, src: Path) -> tuple[float, int, int]:
    """One partition materialized through the asset job with the instance's default
    executor, after landing it (not timed)."""
    env = _environment(out)
    landed = subprocess.run(
        [sys.executable, "-c", LAND, env["ENRICH_DATA_DIR"], str(src)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    key = landed.stdout.strip().splitlines()[-1]
    dagster = str(Path(sys.executable).with_name("dagster"))
    cmd = [dagster, "job", "execute", "-m", "enrichment_assets.definitions"]
    cmd += ["-j", "conversations_pipeline", "--tags", json.dumps({"dagster/partition": key})]
    return timed(cmd, env)


def _one_round(work: Path, i: int, src: Path, folder: Path, args: argparse.Namespace) -> dict:
    """Every scenario once, one after the other; {name: (wall s, RSS KiB, tree KiB)}."""
    enrich = str(Path(sys.executable).with_name("enrich"))
    files = sorted(str(f) for f in folder.iterdir())
    out = work / f"round-{i}"
    timings: dict[str, tuple[float, int, int]] = {}
    floor_dir = out / "floor"
    floor_dir.mkdir(parents=True)
    floor = [sys.executable, "-c", FLOOR, str(floor_dir), *files]
    timings["floor"] = timed(floor, dict(os.environ))
    shutil.rmtree(floor_dir)  # each scenario's output goes once timed: 1M fills a disk
    timings["import the stack"] = timed([sys.executable, "-c", IMPORTS], dict(os.environ))
    timings["run 1 file"] = timed([enrich, "run", str(src)], _environment(out / "one"))
    shutil.rmtree(out / "one")
    env = _environment(out / "many")
    timings[f"run {len(files)} files"] = timed([enrich, "run", str(folder)], env)
    timings["rerun unchanged"] = timed([enrich, "run", str(folder)], env)
    shutil.rmtree(out / "many")
    if not args.skip_ui:
        cli = [enrich, "run", "--no-summaries", "--no-dataset", str(src)]
        timings["CLI 1 partition"] = timed(cli, _environment(out / "cli"))
        shutil.rmtree(out / "cli")
        timings["UI-style 1 partition"] = _ui_style(out / "ui", src)
        shutil.rmtree(out / "ui")
    if args.naive:
        naive_dir = out / "naive"
        naive_dir.mkdir()
        naive = [sys.executable, "-c", NAIVE, str(src), str(naive_dir)]
        timings["naive"] = timed(naive, dict(os.environ))
    return timings


def _print_table(rounds: list[dict]) -> None:
    names = list(rounds[0])
    wall = {n: statistics.median(r[n][0] for r in rounds) for n in names}
    floor = wall["floor"]
    print(f"{'what':24s} {'wall s':>8s} {'x floor':>8s} {'RSS MiB':>8s} {'tree MiB':>9s}  runs")
    for name in names:
        rss = max(r[name][1] for r in rounds) / 1024
        tree = max(r[name][2] for r in rounds) / 1024
        runs = ", ".join(f"{r[name][0]:.1f}" for r in rounds)
        print(
            f"{name:24s} {wall[name]:8.1f} {wall[name] / floor:8.2f} {rss:8.0f} {tree:9.0f}  {runs}"
        )
    many = next(n for n in names if n.startswith("run ") and n != "run 1 file")
    print(f"targets: run 1 file and {many} <= 3 x floor; peak tree memory <= 3072 MiB")
    rerun = wall["rerun unchanged"] / wall["import the stack"]
    print(f"rerun unchanged / import the stack = {rerun:.2f}  (target <= 1.5)")
    if "UI-style 1 partition" in wall:
        ratio = wall["UI-style 1 partition"] / wall["CLI 1 partition"]
        print(f"UI-style / CLI for the same partition = {ratio:.2f}  (target <= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=4, help="files of the folder input")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip-ui", action="store_true", help="leave the UI-style run out")
    parser.add_argument("--naive", action="store_true", help="also time the naive loop")
    args = parser.parse_args()

    from enrichment_assets.sample_data import write_sample_files

    with tempfile.TemporaryDirectory(prefix="enrich-bench-") as tmp:
        work = Path(tmp)
        sample = {"seed": 11, "defect_rate": 0.02}
        (src,) = write_sample_files(work / "one", args.conversations, files=1, **sample)
        folder = work / "many"
        write_sample_files(folder, args.conversations, files=args.files, **sample)
        size_mb = src.stat().st_size / 1e6
        print(
            f"input: {args.conversations} conversations, {size_mb:.0f} MB JSONL, "
            f"as 1 file and as {args.files} files"
        )
        rounds = [_one_round(work, i, src, folder, args) for i in range(args.repeat)]
        _print_table(rounds)


if __name__ == "__main__":
    main()
