"""`enrich worker`: a run worker that takes batch partitions from the shared instance.

Many workers (pods, or processes on one machine) share one Dagster instance on
PostgreSQL (`DAGSTER_HOME` with `deploy/dagster.yaml`, `DAGSTER_PG_URL`), one application
database (`ENRICH_APP_DB_URL`) and one lake; nothing else. Each worker, in a loop:

1. lists the batch partitions registered in the instance (in landing order);
2. claims one with a PostgreSQL session advisory lock (`pg_try_advisory_lock`, on one
   connection the worker keeps): a partition another worker holds is skipped for now;
3. holding the claim, runs it the way `enrich run` does (`runner.materialize_partitions`:
   one in-process run of the pipeline job, recorded in the shared instance, tagged
   `enrich/worker`), unless its inputs are those of its last successful run;
4. releases the claim and goes on.

Recovery needs no person. The claim is the worker's connection: when a worker dies (even
by `kill -9`, or its node is lost and TCP keepalives give up), PostgreSQL ends the session
and drops its locks, so the partition is free at once. The next worker that claims it finds
the dead worker's run still STARTED: since nobody holds the claim, nobody runs it, so that
run is marked failed (its pool slots freed) and the partition is run again. A partition
whose worker runs failed `max_attempts` times is left to the `failed_partitions` sensor
(backoff, alerts) like any failed run.

Dagster's own QueuedRunCoordinator and run launchers start runs from one daemon; they have
no pull-based workers, and a run launched from the queue needs a code server. `enrich
worker` uses Dagster's public APIs for what it does have (the instance, dynamic partitions,
`execute_in_process`, run records), so the runs show in the UI like any other.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from enrichment_assets.debris import clean_leftovers
from enrichment_assets.defs.conversations.partitions import batch_partitions
from enrichment_assets.defs.run_liveness import UNFINISHED_RUN_STATUSES
from enrichment_assets.lake import Lake

WORKER_TAG = "enrich/worker"
_CLAIM = "worker claim {}"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_POLL_S = 2.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerReport:
    """What one worker did: partitions it ran, found done, gave up on, recovered."""

    ran: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


class Claims:
    """The worker's claims: PostgreSQL session advisory locks on one connection."""

    def __init__(self, conn: object) -> None:
        self._conn = conn

    def take(self, partition: str) -> bool:
        row = self._conn.execute(  # type: ignore[attr-defined]
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [_CLAIM.format(partition)]
        ).fetchone()
        return bool(row[0])

    def release(self, partition: str) -> None:
        self._conn.execute(  # type: ignore[attr-defined]
            "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [_CLAIM.format(partition)]
        )


@contextmanager
def claims(app_db_url: str, worker_id: str) -> Iterator[Claims]:
    """The connection that holds this worker's claims; keepalives make PostgreSQL notice
    a lost node within about a minute (a dead process: at once)."""
    import psycopg

    with psycopg.connect(
        app_db_url,
        autocommit=True,
        application_name=f"enrich worker {worker_id}"[:63],
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    ) as conn:
        yield Claims(conn)


def _worker_runs(instance: DagsterInstance, partition: str) -> list:
    runs = instance.get_runs(filters=RunsFilter(tags={"dagster/partition": partition}))
    return [run for run in runs if WORKER_TAG in run.tags]


def _recover_dead(instance: DagsterInstance, partition: str, runs: list) -> list[str]:
    """Mark failed the unfinished worker runs of a partition this worker has just claimed:
    their worker no longer holds the claim, so their process is gone."""
    recovered = []
    for run in runs:
        if run.status not in UNFINISHED_RUN_STATUSES:
            continue
        message = (
            f"run worker {run.tags[WORKER_TAG]} lost (its claim on partition {partition} "
            "was released: the process died); marked failed, another worker runs it again"
        )
        instance.report_run_failed(run, message)
        with suppress(Exception):  # an instance without pools has no slots to free
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        recovered.append(run.run_id)
    return recovered


def _take(
    instance: DagsterInstance,
    lake: Lake,
    partition: str,
    worker_id: str,
    max_attempts: int,
    report: WorkerReport,
) -> str:
    """Run one claimed partition; returns what became of it: ran, unchanged, failed, retry."""
    from enrichment_assets.cli.runner import materialize_partitions
    from enrichment_assets.cli.unchanged_batches import (
        INPUTS_TAG,
        batch_fingerprint,
        unchanged_batches,
    )

    runs = _worker_runs(instance, partition)
    if recovered := _recover_dead(instance, partition, runs):
        report.recovered += recovered
        clean_leftovers(lake.data_dir)  # the dead worker's temporary files, on this host
    inputs = batch_fingerprint(lake, partition)
    # Done: unchanged since its last successful run, or a worker ran these very inputs with
    # success (annotation errors left are for the `failed_partitions` sensor, not for
    # every other worker to retry once).
    ran = any(
        run.status == DagsterRunStatus.SUCCESS and run.tags.get(INPUTS_TAG) == inputs
        for run in runs
    )
    if ran or unchanged_batches(instance, lake, {partition: inputs}):
        return "unchanged"
    failures = sum(1 for run in runs if run.status != DagsterRunStatus.SUCCESS)
    if failures >= max_attempts:
        return "failed"
    (outcome,) = materialize_partitions(
        instance, [partition], tags={WORKER_TAG: worker_id}, lake=lake
    )
    if outcome.skipped:
        return "unchanged"
    return "ran" if outcome.success else "retry"


def work(
    instance: DagsterInstance,
    lake: Lake,
    *,
    worker_id: str | None = None,
    until_idle: bool = True,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    poll_s: float = DEFAULT_POLL_S,
    stopping: Callable[[], bool] = lambda: False,
    on_event: Callable[[str], None] = lambda _: None,
) -> WorkerReport:
    """Take and run batch partitions until none is left (`until_idle`) or `stopping()`."""
    if lake.app_db_url is None:
        raise ValueError("a worker claims partitions in PostgreSQL: set ENRICH_APP_DB_URL")
    worker_id = worker_id or default_worker_id()
    clean_leftovers(lake.data_dir)  # as every command start does (`debris`)
    report = WorkerReport()
    settled: set[str] = set()
    with claims(lake.app_db_url, worker_id) as held:
        while not stopping():
            keys = instance.get_dynamic_partitions(batch_partitions.name)
            todo = [k for k in keys if k not in settled]
            if not todo and until_idle:
                break
            progressed = False
            for key in todo:
                if stopping():
                    break
                if not held.take(key):
                    continue  # another worker runs it; tried again on a later pass
                try:
                    verdict = _take(instance, lake, key, worker_id, max_attempts, report)
                finally:
                    held.release(key)
                on_event(f"partition {key}: {verdict}")
                if verdict != "retry":
                    settled.add(key)
                    getattr(report, verdict).append(key)
                progressed = True
            if not progressed:
                time.sleep(poll_s)
    return report
