"""Is a run still alive? Heartbeats while it works, and the recovery of runs that died.

A run whose process is killed outright (`kill -9`, out of memory, a node lost) stays
STARTED in the Dagster instance forever: nothing is left to record its end, and Dagster's
run monitoring cannot ask the default run launcher whether the process still lives. So
each run says it is alive: while its resources are up (`LakeResource`), a thread sets the
run tags `enrich/heartbeat` (epoch seconds), `enrich/pid` and `enrich/host` every
`interval` seconds. `recover_dead_runs` marks a STARTED run failed when its process is gone
from this host, when its heartbeat is older than `dead_after` seconds, or when it never
beat within a longer grace (a run waiting for a pool slot before its first step). The
`enrich` commands call it as they start and the `failed_partitions` sensor on every tick;
the sensor then retries the partition on its backoff like any failed run.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from enrichment_assets.debris import pid_alive
from enrichment_assets.lake import Lake
from enrichment_assets.locks import claimed_partitions

HEARTBEAT_TAG = "enrich/heartbeat"
PID_TAG = "enrich/pid"
HOST_TAG = "enrich/host"
DEFAULT_INTERVAL_S = 15.0
DEFAULT_DEAD_AFTER_S = 120.0
# A run that never beat at all (it may wait for a pool slot before its first step).
DEFAULT_NEVER_BEAT_AFTER_S = 1800.0

log = logging.getLogger(__name__)


def _run_process_pid() -> int:
    """The pid of the process that runs the whole run: a step process of the multiprocess
    executor is a multiprocessing child of the run worker, which is the one that counts."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid is not None else os.getpid()


@contextmanager
def heartbeat(
    instance: DagsterInstance, run_id: str, interval_s: float = DEFAULT_INTERVAL_S
) -> Iterator[None]:
    """Beat for `run_id` while the block runs (a daemon thread; errors only logged)."""
    stop = threading.Event()
    identity = {PID_TAG: str(_run_process_pid()), HOST_TAG: socket.gethostname()}

    def beat(extra: dict[str, str]) -> None:
        try:
            instance.add_run_tags(run_id, {HEARTBEAT_TAG: f"{time.time():.0f}", **extra})
        except Exception:  # a storage hiccup must not fail the run
            log.debug("heartbeat of run %s not recorded", run_id, exc_info=True)

    def loop() -> None:
        while not stop.wait(interval_s):
            beat({})

    beat(identity)
    thread = threading.Thread(target=loop, name=f"heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    partition: str | None
    reason: str


def _verdict(
    tags: dict[str, str],
    started: float | None,
    now: float,
    dead_after_s: float,
    never_beat_s: float,
) -> str | None:
    """Why a STARTED run with these tags is dead, or None while it may be alive."""
    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if host == socket.gethostname() and pid and pid.isdigit() and not pid_alive(int(pid)):
        return f"its process (pid {pid} on {host}) is gone"
    beat = tags.get(HEARTBEAT_TAG)
    if beat is not None:
        try:
            age = now - float(beat)
        except ValueError:
            age = None
        if age is not None and age > dead_after_s:
            return f"no heartbeat for {age:.0f} s (pid {pid} on {host})"
        return None
    if started is not None and now - started > never_beat_s:
        return f"started {now - started:.0f} s ago and never reported a heartbeat"
    return None


def recover_dead_runs(
    instance: DagsterInstance,
    *,
    now: float | None = None,
    dead_after_s: float = DEFAULT_DEAD_AFTER_S,
    never_beat_s: float = DEFAULT_NEVER_BEAT_AFTER_S,
    limit: int = 500,
) -> list[DeadRun]:
    """Mark failed every STARTED run whose process died (see the module docstring)."""
    now = time.time() if now is None else now
    dead: list[DeadRun] = []
    records = instance.get_run_records(
        filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]), limit=limit
    )
    for record in records:
        run = record.dagster_run
        reason = _verdict(dict(run.tags), record.start_time, now, dead_after_s, never_beat_s)
        if reason is None:
            continue
        message = f"run process lost: {reason}; marked failed so that it can be retried"
        # Re-read: it may have ended on its own since the listing.
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != DagsterRunStatus.STARTED:
            continue
        instance.report_run_failed(current, message)
        dead.append(DeadRun(run.run_id, run.tags.get("dagster/partition"), reason))
    return dead


# Statuses of a run that has not ended (and may still write).
UNFINISHED_RUN_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def active_partitions(
    instance: DagsterInstance,
    lake: Lake,
    *,
    dead_after_s: float = DEFAULT_DEAD_AFTER_S,
    never_beat_s: float = DEFAULT_NEVER_BEAT_AFTER_S,
) -> set[str]:
    """Partitions a live run that has not ended, or a live command's claim, is working on.

    A STARTED run whose process died does not count (nothing changes in the instance: a
    report may ask without recovering anything).
    """
    now = time.time()
    partitions = set()
    for record in instance.get_run_records(filters=RunsFilter(statuses=UNFINISHED_RUN_STATUSES)):
        run = record.dagster_run
        partition = run.tags.get("dagster/partition")
        if partition is None:
            continue
        if run.status == DagsterRunStatus.STARTED and _verdict(
            dict(run.tags), record.start_time, now, dead_after_s, never_beat_s
        ):
            continue
        partitions.add(partition)
    return partitions | claimed_partitions(lake.data_dir)
