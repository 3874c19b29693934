"""Benchmark: a backfill of N batch partitions launched as the UI launches it, against
`enrich run` on the same N files.

    uv run python benchmarks/bench_ui_backfill.py                          # 4 files, 20,000
    uv run python benchmarks/bench_ui_backfill.py --conversations 100000   # 4 files

The generated conversations (seed 11, about 2 % defective) are written as `--files` JSON
Lines files. Each side gets a fresh data folder whose Dagster instance is the data
folder's own (`DAGSTER_HOME` = `$ENRICH_DATA_DIR/dagster`, holding a copy of the project's
`dagster.yaml`: what `dg dev` / `dagster dev` from the project folder and `enrich` use;
`enrich` itself writes no `dagster.yaml`, so Dagster's defaults apply to what that file
leaves out: the QueuedRunCoordinator, at most 10 runs at once, the default run launcher,
no pool limits). Sensors are stopped on both sides: nothing runs but what is timed.

- CLI: `enrich run --no-summaries --no-dataset FOLDER`, one process, landing included;
- UI: the N files landed as batch partitions beforehand (not timed), `dagster dev`
  (webserver and daemon, from the project folder, on a free port of 127.0.0.1) started and
  waited for (not timed: it is up before anyone clicks), then ONE `launchPartitionBackfill`
  of the N partitions of the `conversations_pipeline` job and its four layer assets, the
  mutation and parameters the UI's Materialize > backfill dialog sends from the job's page
  (`--target assets`: from the asset graph, the assets without the job: an asset
  backfill). Timed from the submission until the backfill is in a terminal status and all
  its runs have finished.

Prints both wall times, the UI / CLI ratio (target <= 1.5), then one line per run of each
side from its record and events, in seconds after the submission (UI) or the command's
start (CLI): created, launched (RUN_STARTING: taken off the queue, its process being
started), started (RUN_START: process up, code loaded), first step started, ended; then
the spans: queued (created -> launched), start-up (launched -> started), set-up (started
-> first step), the run's wall time and the part of it inside its steps; how many runs
ran at once, and for the backfill the daemon's latency at both ends (submission -> first
run created, last run ended -> backfill over). Dagster's backfill daemon looks for new
backfills and finished runs every 30 s (a constant of dagster 1.13, not an instance
setting), and the submission comes a few seconds after its first pass: the first wait is
near its worst (an operator clicking at a random moment waits 15 s on average), so the
time from the first run's creation to the last run's end is printed too. Peak memory: RSS
summed over the process tree (CLI: the command and its workers; UI: `dagster dev` with its
webserver, daemon, code server and run processes, and the same idle before the
submission). `--keep DIR` keeps the data folders, instances and the `dagster dev` log.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance
from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES
from dagster._core.storage.dagster_run import FINISHED_STATUSES, RunsFilter
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for `tests.processes`
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_pipeline import _tree_rss_kib, timed  # noqa: E402

from tests.processes import stop_process_group  # noqa: E402

BIN = Path(sys.executable).parent
JOB = "conversations_pipeline"
START_TIMEOUT_S = 300
BACKFILL_TIMEOUT_S = 3600

# Lands the files named after the data folder as batch partitions, one key a line.
LAND = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from enrichment_assets.cli.instance import dagster_instance
    from enrichment_assets.cli.runner import land_files
    from enrichment_assets.lake import Lake
    with dagster_instance() as instance:
        keys = land_files(Lake(Path(sys.argv[1])), instance, [Path(p) for p in sys.argv[2:]])
    print("\\n".join(keys))
    """
)

REPOSITORIES = """
{ repositoriesOrError { ... on RepositoryConnection {
    nodes { name location { name } partitionSets { name pipelineName } } } } }
"""
DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
# As the UI sends it (ui-core LAUNCH_PARTITION_BACKFILL_MUTATION).
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId launchedRunIds }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def _environment(out: Path) -> dict[str, str]:
    """A fresh data folder under `out` whose instance (DAGSTER_HOME) is its own `dagster/`
    with the project's dagster.yaml; sensors stopped, nothing from the caller's lake."""
    data = out / "data"
    home = data / "dagster"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "GX_ANALYTICS_ENABLED": "false",
        "ENRICH_DATA_DIR": str(data),
        "DAGSTER_HOME": str(home),
        # What dagster.yaml's storage names; `dagster dev` sets it from ./.env to the same.
        "ENRICH_DAGSTER_DIR": str(home),
        "ENRICH_SENSORS_DEFAULT_STATUS": "stopped",
    }
    for name in ("ENRICH_LANDING_DIR", "ENRICH_ENRICHER", "ENRICH_APP_DB_URL", "ENRICH_LAKE_URI"):
        env.pop(name, None)
    return env


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        reply = json.load(answer)
    if reply.get("errors"):
        raise SystemExit(f"GraphQL error: {reply['errors'][0].get('message')}")
    return reply["data"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_ui(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """`dagster dev` from the project folder, in its own process group; (process, URL)."""
    port = _free_port()
    cmd = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*cmd, "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one kill of the group stops all it starts
        )
    return process, f"http://127.0.0.1:{port}"


def _wait_for(what: str, ready: Callable[[], object], process: subprocess.Popen) -> object:
    """`ready()`'s first truthy answer (errors count as not yet), within START_TIMEOUT_S."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"dagster dev exited ({process.returncode}) before {what}")
        try:
            answer = ready()
        except (OSError, SystemExit):
            answer = None
        if answer:
            return answer
        time.sleep(1)
    raise SystemExit(f"dagster dev: no {what} within {START_TIMEOUT_S} s")


def _partition_set(url: str) -> dict | None:
    """The repository selector and partition set of the job, once the code location loaded."""
    for repo in _graphql(url, REPOSITORIES)["repositoriesOrError"].get("nodes", []):
        for partition_set in repo["partitionSets"]:
            if partition_set["pipelineName"] == JOB:
                return {
                    "partitionSetName": partition_set["name"],
                    "repositorySelector": {
                        "repositoryLocationName": repo["location"]["name"],
                        "repositoryName": repo["name"],
                    },
                }
    return None


def _daemons_up(url: str) -> bool:
    statuses = _graphql(url, DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
    healthy = {s["daemonType"] for s in statuses if s["healthy"]}
    return {"BACKFILL", "QUEUED_RUN_COORDINATOR"} <= healthy


def _backfill_params(selector: dict, keys: list[str], target: str) -> dict:
    """The Materialize > backfill dialog's parameters: for the job (`job`: a job backfill,
    one run per partition) or for the assets alone (`assets`: what the asset graph's
    dialog sends, an asset backfill that follows the assets' backfill policies)."""
    from enrichment_assets.defs.conversations.jobs import LAYER_ASSETS

    params = {
        "partitionNames": keys,
        "assetSelection": [{"path": list(a.key.path)} for a in LAYER_ASSETS],
        "fromFailure": False,
        "tags": [],
    }
    return {"selector": selector, **params} if target == "job" else params


class TreeMemory:
    """Peak RSS of a process tree, sampled every 100 ms in a thread while in `with`."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kib = pid, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.1):
            self.peak_kib = max(self.peak_kib, _tree_rss_kib(self.pid))

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()


@dataclass
class RunRow:
    """One run from its record and events: seconds after the side's origin."""

    name: str
    status: str
    created: float
    launched: float | None = None  # RUN_STARTING: off the queue, its process being started
    started: float | None = None  # RUN_START: its process is up and its code loaded
    first_step: float | None = None
    ended: float | None = None
    inside_steps: float = 0.0


@dataclass
class Side:
    name: str
    wall: float
    tree_kib: int
    runs: list[RunRow]
    idle_kib: int | None = None
    last_tick: float | None = None  # the last run's end -> the backfill over (UI)


def _open_instance(env: dict[str, str]) -> DagsterInstance:
    """The side's instance, read from this process (its dagster.yaml names the variable)."""
    from dagster._core.instance.ref import InstanceRef

    os.environ["ENRICH_DAGSTER_DIR"] = env["ENRICH_DAGSTER_DIR"]
    return DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"]))


def _add_events(instance: DagsterInstance, run_id: str, row: RunRow, origin: float) -> None:
    """Launch and first step times, and the seconds inside steps, from the run's events."""
    starts: dict[str, float] = {}
    for record in instance.get_records_for_run(run_id, limit=100_000).records:
        event, at = record.event_log_entry.dagster_event, record.event_log_entry.timestamp
        if event is None:
            continue
        if event.event_type == DagsterEventType.RUN_STARTING:
            row.launched = at - origin
        elif event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = at
            row.first_step = min(row.first_step or at - origin, at - origin)
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            row.inside_steps += at - starts.pop(event.step_key, at)


def _run_rows(instance: DagsterInstance, filters: RunsFilter | None, origin: float) -> list[RunRow]:
    """The runs `filters` selects, oldest first, with times relative to `origin` (epoch s)."""
    rows = []
    for record in sorted(instance.get_run_records(filters), key=lambda r: r.create_timestamp):
        run = record.dagster_run
        row = RunRow(
            name=run.tags.get(PARTITION_NAME_TAG, run.job_name),
            status=run.status.value,
            created=record.create_timestamp.timestamp() - origin,
            started=record.start_time - origin if record.start_time else None,
            ended=record.end_time - origin if record.end_time else None,
        )
        _add_events(instance, run.run_id, row, origin)
        rows.append(row)
    return rows


def _cli_side(out: Path, folder: Path) -> Side:
    env = _environment(out)
    origin = time.time()
    cmd = [str(BIN / "enrich"), "run", "--no-summaries", "--no-dataset", str(folder)]
    wall, _, tree_kib = timed(cmd, env)
    with _open_instance(env) as instance:
        return Side("CLI", wall, tree_kib, _run_rows(instance, None, origin))


def _land(env: dict[str, str], files: list[Path]) -> list[str]:
    cmd = [sys.executable, "-c", LAND, env["ENRICH_DATA_DIR"], *map(str, files)]
    landed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if landed.returncode != 0:
        raise SystemExit(f"landing failed: {landed.stderr.strip().splitlines()[-1:]}")
    return landed.stdout.split()


def _wait_backfill(instance: DagsterInstance, backfill_id: str, start: float) -> float:
    """Seconds from `start` (perf counter) until the backfill is over and its runs too."""
    deadline = start + BACKFILL_TIMEOUT_S
    of_backfill = RunsFilter(tags={BACKFILL_ID_TAG: backfill_id})
    while time.perf_counter() < deadline:
        backfill = instance.get_backfill(backfill_id)
        over = backfill is not None and backfill.status in BULK_ACTION_TERMINAL_STATUSES
        if over and all(run.status in FINISHED_STATUSES for run in instance.get_runs(of_backfill)):
            return time.perf_counter() - start
        time.sleep(0.25)
    raise SystemExit(f"backfill {backfill_id} not over within {BACKFILL_TIMEOUT_S} s")


def _launch_and_wait(url: str, params: dict, env: dict[str, str], pid: int) -> Side:
    """Submit the backfill, time it to the end; its runs from the instance."""
    with _open_instance(env) as instance, TreeMemory(pid) as memory:
        origin, start = time.time(), time.perf_counter()
        launched = _graphql(url, LAUNCH_BACKFILL, {"backfillParams": params})
        answer = launched["launchPartitionBackfill"]
        if answer["__typename"] != "LaunchBackfillSuccess":
            raise SystemExit(f"backfill not launched: {answer['__typename']} {answer}")
        wall = _wait_backfill(instance, answer["backfillId"], start)
        of_backfill = RunsFilter(tags={BACKFILL_ID_TAG: answer["backfillId"]})
        runs = _run_rows(instance, of_backfill, origin)
    last_end = max((r.ended for r in runs if r.ended is not None), default=wall)
    return Side("UI", wall, memory.peak_kib, runs, last_tick=wall - last_end)


def _ui_side(out: Path, files: list[Path], target: str) -> Side:
    env = _environment(out)
    keys = _land(env, files)
    process, url = _start_ui(env, out / "dagster-dev.log")
    try:
        selector = _wait_for("code location", lambda: _partition_set(url), process)
        _wait_for("healthy daemon", lambda: _daemons_up(url), process)
        params = _backfill_params(selector, keys, target)
        idle_kib = max(_tree_rss_kib(process.pid) for _ in range(3))
        side = _launch_and_wait(url, params, env, process.pid)
        side.idle_kib = idle_kib
        return side
    finally:
        stop_process_group(process)


def _most_at_once(runs: list[RunRow]) -> int:
    """The most runs executing at the same moment (started, not yet ended)."""
    edges = [(r.started, 1) for r in runs if r.started is not None]
    edges += [(r.ended, -1) for r in runs if r.ended is not None]
    level = most = 0
    for _, step in sorted(edges):
        level += step
        most = max(most, level)
    return most


def _at(value: float | None) -> str:
    return f"{value:7.1f}" if value is not None else f"{'-':>7s}"


def _span(first: float | None, last: float | None) -> str:
    return _at(last - first if first is not None and last is not None else None)


def _print_runs(side: Side) -> None:
    origin = "the submission" if side.name == "UI" else "the command's start"
    print(f"\n{side.name} runs, seconds after {origin}, then the spans between:")
    times = ("created", "launch", "started", "1st stp", "ended")
    spans = ("queued", "startup", "set-up", "wall", "in stps")
    print(f"{'run':22s} {'status':8s} " + " ".join(f"{t:>7s}" for t in (*times, *spans)))
    for run in side.runs:
        launched = run.launched if run.launched is not None else run.created
        print(
            f"{run.name[:22]:22s} {run.status[:8]:8s} "
            + " ".join(_at(t) for t in (run.created, run.launched, run.started))
            + f" {_at(run.first_step)} {_at(run.ended)} {_span(run.created, run.launched)}"
            + f" {_span(launched, run.started)} {_span(run.started, run.first_step)}"
            + f" {_span(run.started, run.ended)} {_at(run.inside_steps)}"
        )
    summary = f"at most {_most_at_once(side.runs)} run(s) at once"
    if side.last_tick is not None and side.runs:
        summary += (
            f"; submission -> first run created {min(r.created for r in side.runs):.1f} s;"
            f" last run ended -> backfill over {side.last_tick:.1f} s"
        )
    print(summary)


def _print_report(cli: Side, ui: Side) -> None:
    print(f"{'side':4s} {'wall s':>8s} {'runs':>5s} {'tree MiB':>9s}")
    for side in (cli, ui):
        line = f"{side.name:4s} {side.wall:8.1f} {len(side.runs):5d} {side.tree_kib / 1024:9.0f}"
        if side.idle_kib is not None:
            line += f"  (dagster dev idle before the submission: {side.idle_kib / 1024:.0f})"
        print(line)
    print(f"UI backfill / CLI = {ui.wall / cli.wall:.2f}  (target <= 1.5)")
    if ui.last_tick is not None and ui.runs:
        until_runs = ui.wall - ui.last_tick
        print(
            f"UI until its last run ended: {until_runs:.1f} s, {until_runs / cli.wall:.2f} x CLI"
            f" (the backfill's status follows {ui.last_tick:.1f} s later)"
        )
        runs = until_runs - min(r.created for r in ui.runs)
        print(
            f"UI from its first run's creation to its last run's end: {runs:.1f} s,"
            f" {runs / cli.wall:.2f} x CLI (without the backfill daemon's 30 s loop)"
        )
    for side in (cli, ui):
        _print_runs(side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=20_000, help="in all the files")
    parser.add_argument("--files", type=int, default=4, help="files, one partition each")
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it")
    parser.add_argument(
        "--target",
        choices=("job", "assets"),
        default="job",
        help="backfill the conversations_pipeline job (default) or its four assets",
    )
    args = parser.parse_args()

    from enrichment_assets.sample_data import write_sample_files

    with tempfile.TemporaryDirectory(prefix="enrich-bench-backfill-") as tmp:
        work = args.keep or Path(tmp)
        folder = work / "in"
        files = write_sample_files(
            folder, args.conversations, files=args.files, seed=11, defect_rate=0.02
        )
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"input: {args.conversations} conversations, {size_mb:.0f} MB in {len(files)} files")
        cli = _cli_side(work / "cli", folder)
        ui = _ui_side(work / "ui", files, args.target)
        _print_report(cli, ui)


if __name__ == "__main__":
    main()
