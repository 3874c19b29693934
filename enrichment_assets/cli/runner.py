"""Landing files as batch partitions and materializing them in-process.

Used by `enrich run` / `enrich demo`; the runs go through the same job of the
same `Definitions` that Dagster loads, into the same instance, so they show in
the UI like any other run. After the batches, the summary days their messages
fall on run through the summaries job the same way.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from enrichment_assets.cli.run_log import append_run_events
from enrichment_assets.defs.conversations.partitions import (
    batch_partitions,
    register_summary_days,
    summary_days,
)
from enrichment_assets.inputs import register_files
from enrichment_assets.lake import Lake
from enrichment_assets.workers import kept_pools


def land_files(lake: Lake, instance: DagsterInstance, files: list[Path]) -> list[str]:
    """Register each file as its own batch partition; returns the partition keys."""
    keys = register_files(lake, files)
    add_partitions(instance, keys)
    return keys


def add_partitions(instance: DagsterInstance, keys: list[str]) -> None:
    """Add the batch partitions the instance does not know yet."""
    new = [
        k
        for k in dict.fromkeys(keys)
        if not instance.has_dynamic_partition(batch_partitions.name, k)
    ]
    if new:
        instance.add_dynamic_partitions(batch_partitions.name, new)


# The run's events go to the instance (and the UI) and to the command's log file; the
# terminal shows one line per problem (`--verbose` streams the events instead).
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
VERBOSE_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# Every run of one `enrich` command carries its id, so that an interrupted command can
# find (and mark failed) the run it was in.
COMMAND_TAG = "enrich/command"


@dataclass
class CommandState:
    """Where a command is: what an interrupt would leave undone."""

    pending: list[str] = field(default_factory=list)
    running: str | None = None
    done: list[str] = field(default_factory=list)
    log_path: Path | None = None
    run_config: dict = field(default_factory=lambda: dict(QUIET_RUN_CONFIG))
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class PartitionOutcome:
    partition: str
    success: bool
    run_id: str
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None
    # Inputs unchanged since `run_id` succeeded: nothing ran (`unchanged_batches.py`).
    skipped: bool = False


def materialize_partitions(
    instance: DagsterInstance,
    partitions: list[str],
    *,
    tags: dict[str, str] | None = None,
    on_done: Callable[[PartitionOutcome], None] | None = None,
    state: CommandState | None = None,
    lake: Lake | None = None,
) -> list[PartitionOutcome]:
    """Run the whole pipeline for each partition, one in-process run each.

    With `lake`, a partition whose inputs (manifest, code, settings) are those of its last
    successful run is not run again (`unchanged_batches.py`): its outcome says `skipped`.
    `state` (when given) follows the progress, for a command that may be interrupted,
    and carries the run config and the log file.
    """
    from enrichment_assets.cli.unchanged_batches import (
        batch_fingerprint,
        remember_inputs,
        unchanged_batches,
    )

    state = state or CommandState()
    keys = list(dict.fromkeys(partitions))
    prints = {k: batch_fingerprint(lake, k) for k in keys} if lake is not None else {}
    unchanged = unchanged_batches(instance, lake, prints) if lake is not None else {}
    state.pending = [k for k in keys if k not in state.done]
    outcomes = []
    # One pool of worker processes for every layer of every partition (`kept_pools`).
    with _long_lived_objects_frozen(), kept_pools():
        for key in keys:
            state.running = key
            state.pending.remove(key)
            if key in unchanged:
                outcome = PartitionOutcome(key, success=True, run_id=unchanged[key], skipped=True)
            else:
                outcome = _execute(
                    instance, key, tags={**state.tags, **(tags or {})}, run_config=state.run_config
                )
                if outcome.success:
                    remember_inputs(instance, outcome.run_id, prints.get(key))
            state.running = None
            state.done.append(key)
            if state.log_path is not None and not outcome.skipped:
                append_run_events(instance, outcome.run_id, state.log_path)
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome)
    return outcomes


@contextmanager
def _long_lived_objects_frozen() -> Iterator[None]:
    """Exempt what is loaded so far (Dagster, the definitions) from garbage collection.

    Those objects outlive the runs; every full collection during them would walk all
    of them again. Unfrozen afterwards, so that the interpreter's exit frees them.
    """
    import enrichment_assets.definitions  # noqa: F401  (loaded before the freeze)

    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# The request a scoped re-enrichment run belongs to (`enrich bulk`): filter on it in the UI.
BULK_REQUEST_TAG = "enrich/bulk_request"
# A scoped re-enrichment re-runs these layers only: raw and validated rows are unchanged.
REENRICHED_ASSETS = ("enriched_conversations", "normalized_conversations")


def reenrich_conversations(
    instance: DagsterInstance,
    lake: Lake,
    scopes: dict[str, list[str]],
    *,
    request_id: str,
    force: bool = False,
    on_done: Callable[[PartitionOutcome], None] | None = None,
) -> list[PartitionOutcome]:
    """Re-enrich only these conversations: one run per partition ({partition: ids}).

    Each run passes the `EnrichmentScope` run config (the partition's other
    conversations keep their annotations; `force` bypasses the enrichment cache)
    and carries the `enrich/bulk_request` tag. A partition never validated yet
    runs every layer.
    """
    from dagster import AssetKey

    outcomes = []
    for key, ids in scopes.items():
        scope = {"conversation_ids": list(ids), "force": force}
        selection = (
            [AssetKey(name) for name in REENRICHED_ASSETS]
            if lake.layer_path("validated", key).exists()
            else None
        )
        outcome = _execute(
            instance,
            key,
            tags={BULK_REQUEST_TAG: request_id},
            run_config={
                **QUIET_RUN_CONFIG,
                "ops": {"enriched_conversations": {"config": scope}},
            },
            asset_selection=selection,
        )
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return outcomes


def materialize_summary_days(
    instance: DagsterInstance,
    days: list[str],
    *,
    tags: dict[str, str] | None = None,
    on_done: Callable[[PartitionOutcome], None] | None = None,
    state: CommandState | None = None,
) -> list[PartitionOutcome]:
    """Register these day partitions, then run `conversation_summaries_job` ONCE over them:
    one in-process run over the range of day partitions from the first to the last of them
    (in the instance's order), which reads the normalized layer once for all its days. A
    day in that range that is not asked for costs its fingerprint only when its inputs did
    not change. One outcome per day asked for (its own checks, its own materialization)."""
    from enrichment_assets.defs.summaries.automation import (
        RANGE_END_TAG,
        RANGE_START_TAG,
        SUMMARIES_JOB,
    )

    state = state or CommandState()
    wanted = list(dict.fromkeys(days))
    if not wanted:
        return []
    register_summary_days(instance, wanted)
    order = {day: i for i, day in enumerate(summary_days.get_partition_keys(None, instance))}
    first, last = min(wanted, key=order.__getitem__), max(wanted, key=order.__getitem__)
    state.running = f"summaries of {first}..{last}"
    result = _execute_in_process(
        instance,
        None,
        tags={**state.tags, **(tags or {}), RANGE_START_TAG: first, RANGE_END_TAG: last},
        run_config=state.run_config,
        job_name=SUMMARIES_JOB,
    )
    state.running = None
    if state.log_path is not None:
        append_run_events(instance, result.run_id, state.log_path)
    outcomes = [_day_outcome(result, day) for day in wanted]
    for outcome in outcomes:
        if on_done is not None:
            on_done(outcome)
    return outcomes


def _day_outcome(result: ExecuteInProcessResult, day: str) -> PartitionOutcome:
    """One day's part of a run over several days: materialized, and no ERROR check failed."""
    materialized = any(
        e.materialization.partition == day for e in result.get_asset_materialization_events()
    )
    failed = failed_error_checks(result, partition=day)
    success = materialized and not failed
    return PartitionOutcome(
        partition=day,
        success=success,
        run_id=result.run_id,
        failed_checks=failed,
        error=None if success or result.success else first_failure(result),
    )


def materialize_pipeline_health(
    instance: DagsterInstance, *, state: CommandState | None = None
) -> PartitionOutcome:
    """Run `pipeline_health_job` once, in-process: the health over every partition and
    its threshold checks (what `enrich run` / `enrich demo` do after their partitions)."""
    from enrichment_assets.defs.health.assets import HEALTH_JOB

    state = state or CommandState()
    state.running = "pipeline health"
    outcome = _execute(
        instance, None, tags=state.tags, run_config=state.run_config, job_name=HEALTH_JOB
    )
    state.running = None
    if state.log_path is not None:
        append_run_events(instance, outcome.run_id, state.log_path)
    # Its checks report levels: a critical threshold is news (and an alert), not a failed
    # command; only a run that failed is.
    return PartitionOutcome(
        partition=outcome.partition,
        success=outcome.error is None,
        run_id=outcome.run_id,
        error=outcome.error,
    )


def _execute(
    instance: DagsterInstance,
    key: str | None,
    *,
    tags: dict[str, str],
    run_config: dict,
    asset_selection: list | None = None,
    job_name: str | None = None,
    definitions: Definitions | None = None,
) -> PartitionOutcome:
    """One in-process run of a job (default: the pipeline) for one partition (None: an
    unpartitioned job), as an outcome (`definitions`: those of the code location unless
    given)."""
    result = _execute_in_process(
        instance,
        key,
        tags=tags,
        run_config=run_config,
        asset_selection=asset_selection,
        job_name=job_name,
        definitions=definitions,
    )
    failed_checks = failed_error_checks(result)
    return PartitionOutcome(
        partition=key or result.job_def.name,
        success=result.success and not failed_checks,
        run_id=result.run_id,
        failed_checks=failed_checks,
        error=None if result.success else first_failure(result),
    )


def _execute_in_process(
    instance: DagsterInstance,
    key: str | None,
    *,
    tags: dict[str, str],
    run_config: dict,
    asset_selection: list | None = None,
    job_name: str | None = None,
    definitions: Definitions | None = None,
) -> ExecuteInProcessResult:
    """One in-process run of a job of the code location (or of `definitions`)."""
    from enrichment_assets.definitions import defs
    from enrichment_assets.defs.conversations.jobs import conversations_pipeline

    job = (definitions or defs).resolve_job_def(job_name or conversations_pipeline.name)
    return job.execute_in_process(
        partition_key=key,
        instance=instance,
        raise_on_error=False,
        tags=tags,
        run_config=run_config,
        asset_selection=asset_selection,
    )


def failed_error_checks(result: ExecuteInProcessResult, partition: str | None = None) -> list[str]:
    """`asset:check` of each ERROR-severity check the run failed (WARN ones do not count);
    with `partition`, of that partition's evaluations only."""
    return [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed
        and e.severity.value == "ERROR"
        and (partition is None or e.partition == partition)
    ]


def first_failure(result: object) -> str:
    """One line naming the failed step and the root cause of its error."""
    for event in result.all_events:  # type: ignore[attr-defined]
        if event.is_step_failure and event.event_specific_data is not None:
            # A `Failure` raised on purpose says it in its description (one line for people).
            failure = event.event_specific_data.user_failure_data
            if failure is not None and failure.description:
                return f"step {event.step_key} failed: {failure.description.strip()}"
            error = event.event_specific_data.error
            # A worker's error carries its traceback text as a cause: stop above it.
            while (
                error is not None
                and error.cause is not None
                and error.cause.cls_name != "_RemoteTraceback"
            ):
                error = error.cause
            message = error.message.strip().splitlines()[0] if error else "see the run's logs"
            return f"step {event.step_key} failed: {message}"
    return "the run failed: see its logs in the Dagster UI"
