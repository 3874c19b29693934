"""The `enrich` command: run the pipeline, inspect statuses, read the report.

Exit codes: 0 ok, 1 failure (a gate blocked, an id is unknown, input unreadable),
2 usage error. Errors are one line on stderr; set ENRICH_DEBUG=1 for the traceback.

Heavy libraries (dagster, duckdb, polars) are imported inside the commands so
that `enrich --help` stays fast.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from enrichment_assets.cli.dataset_run import DatasetOutcome
    from enrichment_assets.cli.runner import CommandState, PartitionOutcome
    from enrichment_assets.inputs import FoundInputs, LandingReport
    from enrichment_assets.lake import Lake

from enrichment_assets import settings as env_settings
from enrichment_assets.object_store import LakeStoreError
from enrichment_assets.postgres_url import PostgresUrlError
from enrichment_assets.terminal import console, dumps_json, plain, visible

if TYPE_CHECKING:
    from enrichment_assets.cli.runner import PartitionOutcome

app = typer.Typer(
    name="enrich",
    help=(
        "Turn raw conversation transcripts into validated, enriched, training-ready data.\n\n"
        "Example: enrich demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Not a terminal (a pipe, CI): a wide console, so tables are never cut. Neither console
# reads markup: what they print can hold ids and text from the data.
out = console(width=None if sys.stdout.isatty() else 160)
err = console(stderr=True)


class CommandError(Exception):
    """A failure to report as one line, with exit code 1."""


def _data_dir() -> Path:
    """The data folder; with the lake on object storage, its working copy, pulled once."""
    from enrichment_assets.lake import default_data_dir
    from enrichment_assets.object_store import StoreSettings, open_working_copy

    data_dir = default_data_dir()
    open_working_copy(data_dir, StoreSettings.from_env())
    return data_dir


def _lake() -> Lake:
    """The data folder, with the application database its statuses are published to."""
    from enrichment_assets.app_db import app_db_url
    from enrichment_assets.lake import Lake, default_landing_dir

    data_dir = _data_dir()
    return Lake(data_dir, app_db_url=app_db_url(), landing_dir=default_landing_dir(data_dir))


def _counts_table(counts: dict[str, dict[str, int]], title: str) -> Table:
    from enrichment_assets.queries import LAYER_COUNTS

    table = Table(title=title)
    table.add_column("partition")
    for layer in LAYER_COUNTS:
        table.add_column(layer, justify="right")
    for partition, row in counts.items():
        style = "bold" if partition == "total" else None
        table.add_row(plain(partition), *(str(row[layer]) for layer in LAYER_COUNTS), style=style)
    return table


# At most this many problem lines are printed; the rest are counted.
MAX_PROBLEM_LINES = 20


def _partition_problem(outcome: PartitionOutcome) -> str:
    reason = (
        f"gate failed ({', '.join(outcome.failed_checks)})"
        if outcome.failed_checks
        else outcome.error
    )
    return f"{outcome.partition}: did not complete: {reason} (run {outcome.run_id})"


# What `CommandState.running` says while the training dataset is built.
DATASET_STEP = "the training dataset"


def _describe_interrupt(state: CommandState) -> str:
    """What an interrupt leaves undone, in one line."""
    log = f" (log: {state.log_path.resolve()})" if state.log_path else ""
    if state.running == DATASET_STEP:
        return (
            "every partition had completed; the training dataset was not rebuilt (its files "
            f"are those of its last complete build). Run the same command again to build it{log}"
        )
    undone = ([f"{state.running} (was running)"] if state.running else []) + state.pending
    if not undone:
        return f"every partition had completed; nothing was published afterwards{log}"
    named = ", ".join(undone[:5]) + (f" and {len(undone) - 5} more" if len(undone) > 5 else "")
    return (
        f"{len(undone)} partition(s) did not complete: {named}; nothing was published "
        f"from them. Run the same command again to finish{log}."
    )


def _run_pipeline(
    paths: list[Path],
    *,
    title: str,
    summaries: bool = True,
    dataset: bool = True,
    verbose: bool = False,
    dry_run: bool = False,
) -> None:
    from enrichment_assets.cli.run_log import open_command_log, others_write_to

    lake = _lake()
    # The folder the new_raw_files sensor watches: there from the first command on, so
    # that files can be dropped in and the sensor has somewhere to look.
    lake.landing_dir.mkdir(parents=True, exist_ok=True)
    log_path = open_command_log(lake.data_dir, verbose=verbose)
    with nullcontext() if verbose else others_write_to(log_path):
        _run_logged(
            paths,
            lake,
            log_path,
            title=title,
            steps=_Steps(summaries=summaries, dataset=dataset),
            verbose=verbose,
            dry_run=dry_run,
        )


@dataclass(frozen=True)
class _Steps:
    """What `enrich run` / `enrich demo` do after the partitions."""

    summaries: bool = True
    dataset: bool = True


def _run_logged(
    paths: list[Path],
    lake: Lake,
    log_path: Path,
    *,
    title: str,
    steps: _Steps,
    verbose: bool,
    dry_run: bool = False,
) -> None:
    import uuid

    found, report = _land(paths, lake)
    from enrichment_assets.cli.instance import dagster_instance
    from enrichment_assets.cli.interrupts import run_interruptibly
    from enrichment_assets.cli.runner import (
        COMMAND_TAG,
        QUIET_RUN_CONFIG,
        VERBOSE_RUN_CONFIG,
        CommandState,
        add_partitions,
    )
    from enrichment_assets.locks import claim

    for note in report.notes:
        out.print(plain(note), soft_wrap=True)
    unique = report.partitions
    state = CommandState(
        log_path=log_path,
        run_config=VERBOSE_RUN_CONFIG if verbose else QUIET_RUN_CONFIG,
        tags={COMMAND_TAG: uuid.uuid4().hex},
    )
    with dagster_instance() as instance:
        _recover_dead_runs(instance)
        add_partitions(instance, unique)
        if dry_run:
            with claim(lake.data_dir, unique, owner=state.tags[COMMAND_TAG]):
                _print_dry_run(instance, lake, unique)
            _fail_on_problems(report.problems + found.missing, [], files=len(found.files), runs=0)
            return
        with claim(lake.data_dir, unique, owner=state.tags[COMMAND_TAG]):
            outcomes, days, dataset = run_interruptibly(
                lambda: _materialize(instance, lake, unique, steps, state),
                lambda signum: _on_interrupt(instance, lake, state, signum),
            )
    _print_run(lake, unique, title, days=days, outcomes=outcomes, dataset=dataset)
    err.print(plain(f"log: {log_path.resolve()}"), soft_wrap=True)
    _fail_on_problems(
        report.problems + found.missing,
        [o for o in outcomes if not o.success],
        files=len(found.files) + len(found.missing),
        runs=len(outcomes),
        dataset=dataset,
    )


def _land(paths: list[Path], lake: Lake) -> tuple[FoundInputs, LandingReport]:
    """The files the paths name, landed as batches (`inputs.land_inputs`); leftovers of
    commands that died (temporary files, scratch folders) are removed first."""
    from enrichment_assets.debris import clean_leftovers
    from enrichment_assets.inputs import InputError, expand_inputs, land_inputs

    for leftover in clean_leftovers(lake.data_dir):
        logging.getLogger("enrich").info("removed the leftover %s of a run that died", leftover)
    try:
        found = expand_inputs(paths)
    except InputError as error:
        raise CommandError(str(error)) from error
    # The definitions load first, alone: Dagster's defs-folder loader changes the process's
    # working directory for a moment (`pushd`), under a landing thread's relative paths.
    import enrichment_assets.definitions

    # While the command's other modules load here, the files are landed (hashing and
    # copying leave this process's GIL free). Worker processes start only for a layer with
    # several chunks.
    with ThreadPoolExecutor(1, thread_name_prefix="landing") as landing:
        landed = landing.submit(land_inputs, lake, found.files)
        import enrichment_assets.cli.instance
        import enrichment_assets.cli.interrupts
        import enrichment_assets.cli.runner
        import enrichment_assets.locks  # noqa: F401  (the runs need each of these)

        report = landed.result()
    return found, report


def _print_run(
    lake: Lake,
    partitions: list[str],
    title: str,
    *,
    days: list[str],
    outcomes: list[PartitionOutcome],
    dataset: DatasetOutcome | None,
) -> None:
    """What the command did: rows per layer, summaries, LLM batches out, the dataset."""
    _print_results(lake, partitions, days, title)
    _print_llm_batches(lake, partitions)
    if skipped := sum(1 for o in outcomes if o.skipped):
        out.print(f"unchanged since their last run, not run again: {skipped} partition(s)")
    if dataset is not None:
        _print_dataset(dataset)


def _print_dry_run(instance: DagsterInstance, lake: Lake, partitions: list[str]) -> None:
    """Validate the partitions, print what enriching them would cost, send nothing."""
    from enrichment_assets.cli.spend_estimate import dry_run
    from enrichment_assets.enrichers.settings import LLMSettings

    try:
        settings = LLMSettings.from_env()
    except ValueError as error:
        raise CommandError(_message(error, first_line=True)) from error
    result = dry_run(instance, lake, partitions, settings)
    table = Table(title="estimated LLM spend (dry run: nothing sent)")
    for column in ("partition", "conversations", "to send", "cached", "prompt tok", "compl tok"):
        table.add_column(column, justify="left" if column == "partition" else "right")
    table.add_column("USD", justify="right")
    rows = [(p.partition, p.estimate) for p in result.partitions]
    if (total := result.total) is not None:
        rows.append(("total", total))
    for name, estimate in rows:
        if estimate is None:
            table.add_row(plain(name), *["-"] * 6)
            continue
        cost = "?" if estimate.cost_usd is None else f"{estimate.cost_usd:.6f}"
        table.add_row(
            plain(name),
            str(estimate.conversations),
            str(estimate.requests),
            str(estimate.cached),
            str(estimate.prompt_tokens),
            str(estimate.completion_tokens),
            cost,
        )
    out.print(table)
    if settings.enricher == "heuristic":
        out.print("enricher: heuristic (offline): enriching costs nothing")
    elif total is not None:
        out.print(plain(f"estimate {total.assumptions()}"), soft_wrap=True)
    limit = result.run_limit_usd
    out.print("budget: none set" if limit is None else f"budget: ${limit:.6f} per run")
    for partition in result.partitions:
        if partition.problem:
            out.print(plain(f"{partition.partition}: not estimated: {partition.problem}"))
        elif partition.over(limit):
            out.print(
                plain(f"{partition.partition}: over budget: a run would refuse and send nothing")
            )


def _recover_dead_runs(instance: DagsterInstance) -> None:
    from enrichment_assets.defs.run_liveness import recover_dead_runs

    for dead in recover_dead_runs(instance):
        err.print(
            Text(
                f"enrich: run {dead.run_id} of partition {dead.partition} had died "
                f"({dead.reason}): marked failed, it runs again"
            ),
            soft_wrap=True,
        )


def _materialize(
    instance: DagsterInstance,
    lake: Lake,
    partitions: list[str],
    steps: _Steps,
    state: CommandState,
) -> tuple[list[PartitionOutcome], list[str], DatasetOutcome | None]:
    """The partitions' runs, then the summary days their messages fall on, then the default
    training dataset over every partition."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from enrichment_assets.cli.dataset_run import materialize_training_dataset
    from enrichment_assets.cli.run_log import append_run_events
    from enrichment_assets.cli.runner import (
        materialize_partitions,
        materialize_pipeline_health,
        materialize_summary_days,
    )

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=not err.is_terminal,
    ) as progress:
        task = progress.add_task("materializing partitions", total=len(partitions))
        outcomes = materialize_partitions(
            instance, partitions, on_done=lambda _: progress.advance(task), state=state, lake=lake
        )
        days, changed = _summary_days(lake, partitions) if steps.summaries else ([], [])
        day_task = progress.add_task("summarizing days", total=len(changed))
        outcomes += materialize_summary_days(
            instance, list(changed), on_done=lambda _: progress.advance(day_task), state=state
        )
        dataset = None
        if steps.dataset:
            # Last, over every partition: an interrupt before this point ends the process, so
            # no dataset is built from a command that did not finish its partitions.
            dataset_task = progress.add_task("building the training dataset", total=1)
            state.running = DATASET_STEP
            dataset = materialize_training_dataset(
                instance, tags=state.tags, run_when_unchanged=False
            )
            state.running = None
            if state.log_path is not None and not dataset.unchanged:
                append_run_events(instance, dataset.run_id, state.log_path)
            progress.advance(dataset_task)
        # Then the health over every partition, with its threshold checks; unless nothing
        # ran at all (unchanged input costs nothing: the last health run stands).
        nothing_ran = all(o.skipped for o in outcomes) and (dataset is None or dataset.unchanged)
        if not (outcomes and nothing_ran):
            outcomes.append(materialize_pipeline_health(instance, state=state))
    return outcomes, days, dataset


def _summary_days(lake: Lake, partitions: list[str]) -> tuple[list[str], list[str]]:
    """The summary days the batches' messages fall on (today's waits for midnight), and
    those of them whose inputs changed since their files were published."""
    from enrichment_assets.defs.summaries.automation import summary_days_of
    from enrichment_assets.enrichers.settings import LLMSettings
    from enrichment_assets.summary_inputs import changed_days
    from enrichment_assets.summary_windows import default_windows

    days = summary_days_of(lake, partitions)
    return days, list(changed_days(lake, days, default_windows(), LLMSettings.from_env()))


def _on_interrupt(instance: DagsterInstance, lake: Lake, state: CommandState, signum: int) -> str:
    """Record the end of the command's run in flight (failed: it is retried), remove this
    process's temporary files, and say what did not complete."""
    import signal

    from dagster import DagsterRunStatus, RunsFilter

    from enrichment_assets.cli.runner import COMMAND_TAG
    from enrichment_assets.dataset.publish import RENAMING
    from enrichment_assets.debris import remove_own_leftovers

    name = signal.Signals(signum).name
    try:
        runs = instance.get_runs(
            filters=RunsFilter(
                tags={COMMAND_TAG: state.tags[COMMAND_TAG]},
                statuses=[
                    DagsterRunStatus.NOT_STARTED,
                    DagsterRunStatus.STARTING,
                    DagsterRunStatus.STARTED,
                ],
            )
        )
        for run in runs:
            instance.report_run_failed(run, f"interrupted by {name}: the command was stopped")
    finally:
        remove_own_leftovers(lake.data_dir)
        # A dataset publication under way finishes its renames first (milliseconds); none
        # starts after this: the files of two builds are never left mixed.
        RENAMING.acquire(timeout=2.0)
    return _describe_interrupt(state)


def _print_results(lake: Lake, partitions: list[str], days: list[str], title: str) -> None:
    from enrichment_assets.cli.summaries_report import summaries_report
    from enrichment_assets.queries import layer_counts

    counts = layer_counts(lake)
    shown = {p: counts[p] for p in partitions if p in counts}
    total = {layer: sum(row[layer] for row in shown.values()) for layer in counts["total"]}
    out.print(_counts_table({**shown, "total": total}, title))
    summarized = [row for row in summaries_report(lake)["per_day"] if row["day"] in days]
    out.print(
        f"summaries: {sum(row['summaries'] for row in summarized)} over {len(days)} day(s)"
        + (f" {days[0]}..{days[-1]}" if days else "")
    )
    from enrichment_assets.object_store import shown

    out.print(plain(f"exports: {shown(lake.data_dir / 'export')}"))
    out.print(plain(f"lake:    {shown(lake.data_dir / 'lake')}"))


def _print_llm_batches(lake: Lake, partitions: list[str]) -> None:
    """One line per partition whose LLM batches are out (ENRICH_LLM_MODE=batch): they are
    not a failure; their results arrive by the `llm_batches` sensor or the next run."""
    from enrichment_assets.enrichers.batch_ledger import read_batches

    for partition in partitions:
        record = read_batches(lake.data_dir, partition)
        if record is None:
            continue
        statuses = ", ".join(f"{b.batch_id} {b.status}" for b in record.batches)
        out.print(
            plain(
                f"{partition}: {record.requests} conversation(s) submitted to the Batch API "
                f"({statuses}); they stay enrichment_in_progress until the llm_batches sensor "
                "(dagster dev / the daemon) applies the results once the batch ends, or run "
                "the same `enrich run` again to apply finished batches now"
            ),
            soft_wrap=True,
        )


def _print_dataset(dataset: DatasetOutcome) -> None:
    """One line: what the training dataset kept and removed, and where it is."""
    from enrichment_assets.object_store import shown

    where = plain(shown(dataset.folder)) if dataset.folder is not None else "-"
    if not dataset.success:
        out.print(f"training dataset {dataset.name}: not published (see below); {where}")
        return
    if dataset.withheld is not None:  # another command's batches changed while it was built
        out.print(plain(f"training dataset {dataset.name}: not published: {dataset.withheld}"))
        return
    counts = dataset.counts or {}
    removed = counts.get("removed", {})
    removed_text = ", ".join(f"{n} {step.replace('_', ' ')}" for step, n in removed.items() if n)
    out.print(
        plain(
            f"training dataset {dataset.name}: {counts.get('train', 0)} train + "
            f"{counts.get('validation', 0)} validation lines of {counts.get('completed', 0)} "
            f"completed conversations; removed: {removed_text or 'none'}"
            f"{' (inputs unchanged: files left as they were)' if dataset.unchanged else ''}"
            f" -> {where}"
        ),
        soft_wrap=True,
    )


def _dataset_problem(dataset: DatasetOutcome) -> str:
    reason = (
        f"gate failed ({', '.join(dataset.failed_checks)})"
        if dataset.failed_checks
        else dataset.error or "not published"
    )
    return (
        f"training dataset {dataset.name}: not published, its files kept as they were: "
        f"{reason} (run {dataset.run_id})"
    )


def _fail_on_problems(
    file_problems: list[str],
    failed_runs: list[PartitionOutcome],
    *,
    files: int,
    runs: int,
    dataset: DatasetOutcome | None = None,
) -> None:
    """Exit 1, after everything else ran, when a file could not be read, a partition did not
    complete or the training dataset was not published: one line per problem (at most
    MAX_PROBLEM_LINES), then a count."""
    dataset_failed = dataset is not None and not dataset.success
    lines = list(file_problems) + [_partition_problem(o) for o in failed_runs]
    if dataset_failed:
        lines.append(_dataset_problem(dataset))  # type: ignore[arg-type]
    if not lines:
        return
    for line in lines[:MAX_PROBLEM_LINES]:
        err.print(plain(f"enrich: {line}"), soft_wrap=True)
    if len(lines) > MAX_PROBLEM_LINES:
        err.print(plain(f"enrich: and {len(lines) - MAX_PROBLEM_LINES} more"))
    parts = []
    if file_problems:
        parts.append(f"{len(file_problems)} of {files} file(s) could not be read")
    if failed_runs:
        parts.append(f"{len(failed_runs)} of {runs} partition(s) did not complete")
    if dataset_failed:
        parts.append("the training dataset was not published")
    raise CommandError("; ".join(parts))


# The options of `enrich run` (and `--verbose` of `enrich demo`).
PathsArgument = Annotated[
    list[Path] | None,
    typer.Argument(help="Files, or folders to take every file from.", show_default=False),
]
SummariesOption = Annotated[
    bool,
    typer.Option(
        "--summaries/--no-summaries",
        help="Also materialize the daily summaries of the days the batches cover.",
    ),
]
DatasetOption = Annotated[
    bool,
    typer.Option(
        "--dataset/--no-dataset",
        help="Then build the default training dataset over every partition "
        "(export/dataset/default/; skipped when its inputs did not change).",
    ),
]
VerboseOption = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Stream the runs' event log to the terminal."),
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Land and validate, print the estimated LLM cost per partition, and stop "
        "(nothing is sent).",
    ),
]
StaleOption = Annotated[
    bool,
    typer.Option(
        "--stale",
        help="Instead of PATHs: re-enrich exactly the partitions whose annotation code "
        "version (enricher, model, prompt version, output schema) changed.",
    ),
]


@app.command()
def run(
    paths: PathsArgument = None,
    summaries: SummariesOption = True,
    dataset: DatasetOption = True,
    verbose: VerboseOption = False,
    dry_run: DryRunOption = False,
    stale: StaleOption = False,
) -> None:
    """Land files as batch partitions and materialize every asset for them.

    Each file becomes one partition (its bytes frozen in the landing store); the
    runs are recorded in the Dagster instance, so they show in `dagster dev`.
    Bytes already landed are not landed again, whatever the file's name: the
    partition holding them is named and run. A file that cannot be read (empty,
    binary, unreadable, not a regular file) becomes one quarantined row and the
    other files go on. Exits 0 when every file was read and every partition
    completed, even if records were quarantined; otherwise 1, at the end, with
    one line per problem. The runs' full event log goes to a file under
    <data dir>/logs/ (its path is printed) and to the Dagster UI. SIGINT or SIGTERM
    stops it within seconds (exit 130 or 143), saying what did not complete; nothing
    is published from partial data, and the next run finishes it. At the end the
    default training dataset is built over every partition (its counts and folder are
    printed; a failed gate keeps its previous files and exits 1). Arguments after
    `--` are always paths.

    Example: enrich run ./conversations/2024-06-01.jsonl ./more/

    Example: enrich run -- -rf.jsonl
    """
    if stale:
        if paths:
            raise typer.BadParameter("--stale takes no PATHs: it re-enriches stale partitions")
        _run_stale()
        return
    if not paths:
        raise typer.BadParameter("give files or folders to run, or --stale")
    _run_pipeline(
        paths,
        title="rows per layer",
        summaries=summaries,
        dataset=dataset,
        verbose=verbose,
        dry_run=dry_run,
    )


def _run_stale() -> None:
    """`enrich run --stale`: one line per stale partition (and why), then its re-run."""
    from enrichment_assets.cli.instance import dagster_instance
    from enrichment_assets.cli.stale_partitions import reenrich_stale
    from enrichment_assets.definitions import defs

    with dagster_instance() as instance:
        _recover_dead_runs(instance)
        stale, outcomes = reenrich_stale(instance, defs)
    for partition in stale:
        out.print(plain(f"{partition.asset} {partition.partition}: {partition.reason}"))
    failed = [o for o in outcomes if not o.success]
    out.print(f"re-enriched {len(outcomes) - len(failed)} stale partition(s)")
    _fail_on_problems([], failed, files=0, runs=len(outcomes))


@app.command()
def demo(
    conversations: Annotated[
        int, typer.Option("--conversations", "-n", help="How many to generate.")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed of the generator.")] = 7,
    verbose: VerboseOption = False,
) -> None:
    """Generate realistic sample conversations (with ~3 % defects) and run every asset.

    Writes four files (JSON Lines, JSON array, OpenAI and ShareGPT formats) under
    <data dir>/samples/, then does what `enrich run` does with them.

    Example: enrich demo -n 5000
    """
    from enrichment_assets.sample_data import write_sample_files

    samples = _data_dir() / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    files = write_sample_files(
        samples,
        conversations,
        files=4,
        seed=seed,
        formats=("jsonl", "json_array", "openai_jsonl", "sharegpt_json"),
    )
    out.print(f"generated {conversations} conversations in {len(files)} files under {samples}")
    _run_pipeline(files, title="demo: rows per layer", verbose=verbose)


@app.command()
def worker(
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Exit once every partition is done.")
    ] = False,
    max_attempts: Annotated[
        int, typer.Option(min=1, help="Failed worker runs of a partition before it is left.")
    ] = 3,
    poll_s: Annotated[float, typer.Option(min=0.1, help="Seconds between idle passes.")] = 2.0,
) -> None:
    """Take batch partitions from the shared Dagster instance and run them, beside other
    workers (claims are PostgreSQL advisory locks: needs ENRICH_APP_DB_URL and, to share
    the instance, DAGSTER_HOME on PostgreSQL). SIGTERM: stop after the current partition.

    Example: DAGSTER_HOME=/opt/dagster ENRICH_APP_DB_URL=postgresql://... enrich worker
    """
    import signal
    import threading

    lake = _lake()
    if lake.app_db_url is None:
        raise CommandError("enrich worker claims partitions in PostgreSQL: set ENRICH_APP_DB_URL")
    import enrichment_assets.definitions  # noqa: F401  (the runs need it)
    from enrichment_assets.cli.instance import dagster_instance
    from enrichment_assets.cli.run_worker import work

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    say = lambda line: err.print(plain(f"enrich worker: {line}"), soft_wrap=True)  # noqa: E731
    with dagster_instance() as instance:
        done = work(
            instance,
            lake,
            until_idle=until_idle,
            max_attempts=max_attempts,
            poll_s=poll_s,
            stopping=stop.is_set,
            on_event=say,
        )
    out.print(
        f"ran {len(done.ran)}, unchanged {len(done.unchanged)}, left failed {len(done.failed)}, "
        f"recovered {len(done.recovered)} dead run(s)"
    )
    if done.failed:
        raise CommandError(f"{len(done.failed)} partition(s) failed {max_attempts} times")


@app.command()
def status(
    conversation_id: Annotated[
        str | None, typer.Argument(help="A conversation id; none: list conversations.")
    ] = None,
    partition: Annotated[
        str | None, typer.Option("--partition", "-p", help="List this partition's conversations.")
    ] = None,
    status_filter: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            help="List the conversations in this status: not_started, validated, "
            "enrichment_in_progress, enriched, completed, validation_failed, normalization_failed.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="Rows listed per page.")] = 50,
    offset: Annotated[int, typer.Option(help="Rows skipped before the page.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Show one conversation's status, validation report and documents, or list them.

    With an ID: its status, retry count, last error, validation report, raw and
    enriched documents (exit 1 when the id is unknown). Without: counts per status
    and a page of conversations, filtered by --partition and/or --status.

    Example: enrich status 0b6f3c8e-2d1a-4c52-9f0e-7a1d2b3c4d5e --json

    Example: enrich status --status validation_failed --limit 20
    """
    from enrichment_assets.cli.operations.views import conversation_view, listing_view
    from enrichment_assets.queries import conversation_status

    lake = _lake()
    if conversation_id is None:
        from enrichment_assets.cli.operations.status_listing import list_statuses

        with _operation_errors():
            listing = list_statuses(
                lake, partition=partition, status=status_filter, limit=limit, offset=offset
            )
        if as_json:
            _print_json(listing.to_json())
        else:
            out.print(listing_view(listing))
        return
    if partition is not None or status_filter is not None:
        raise typer.BadParameter("give a conversation id, or --partition / --status to list")
    # With an application database, its published status row is the answer.
    found = conversation_status(lake, conversation_id, lake.app_db_url)
    if found is None:
        raise CommandError(f"unknown conversation id {conversation_id!r}")
    if as_json:
        _print_json(found)
        return
    out.print(conversation_view(found))


@app.command()
def bulk(
    conversation_ids: Annotated[
        list[str] | None, typer.Argument(help="Conversation ids (any number).", show_default=False)
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            "-f",
            help="A file of ids: one per line, or separated by spaces or commas; # comments.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Re-enrich completed ones too, bypassing the cache.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="{total, successful, failed, skipped, items} on stdout.")
    ] = False,
) -> None:
    """Re-enrich these conversations through Dagster runs (one per partition).

    Each id is checked: a malformed or unknown id is a failed item, the others
    are processed; completed conversations are skipped unless --force. Only the
    listed conversations of each partition are re-enriched (the others keep their
    annotations); the runs carry the tag enrich/bulk_request=<request id>.
    Exit 0 when every item was processed or skipped, 1 when any failed.

    Example: enrich bulk 0b6f3c8e-2d1a-4c52-9f0e-7a1d2b3c4d5e --force

    Example: enrich bulk --from-file ids.txt --json
    """
    from enrichment_assets.cli.instance import dagster_instance
    from enrichment_assets.cli.operations.bulk import bulk_reenrich, read_ids
    from enrichment_assets.cli.operations.views import bulk_view, progress_bar

    with _operation_errors():
        ids = read_ids(conversation_ids or [], from_file)
    if not ids:
        raise typer.BadParameter("no conversation ids: give IDs or --from-file FILE")
    with dagster_instance() as instance, progress_bar(err, "partition runs") as progress:
        task = progress.add_task("re-enriching", total=None)
        result = bulk_reenrich(
            _lake(),
            instance,
            ids,
            force=force,
            on_plan=lambda runs: progress.update(task, total=runs),
            on_run_done=lambda _: progress.advance(task),
        )
    if as_json:
        _print_json(result.to_json())
    else:
        out.print(bulk_view(result))
    failed = result.count("failed")
    if failed:
        raise CommandError(
            f"{failed} of {len(result.items)} item(s) failed (request {result.request_id})"
        )


@app.command()
def export(
    what: Annotated[str, typer.Option("--what", help="raw | enriched | training | quarantine.")],
    out_path: Annotated[
        Path, typer.Option("--out", help="The file to write (a folder for --format json).")
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="jsonl | json (one file each) | openai | sharegpt.")
    ] = "jsonl",
    partition: Annotated[
        str | None, typer.Option("--partition", "-p", help="Only this partition.")
    ] = None,
    status_filter: Annotated[
        str | None, typer.Option("--status", "-s", help="Only conversations in this status.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace an existing --out file (json: write into a non-empty folder)."
        ),
    ] = False,
) -> None:
    """Write the lake's documents in the format you need, atomically.

    enriched and training hold completed conversations, quarantine the rejected
    records with their validation report, raw every landed record (any status).
    openai and sharegpt are chat formats (enriched, training); json writes one
    file per conversation into the --out folder. --out is a new path, or with
    --force an existing regular file (its permissions kept); never a device, FIFO,
    socket or link.

    Example: enrich export --what training --format sharegpt --out train.jsonl

    Example: enrich export --what enriched --format json --out docs/ --partition my-batch-0123abcd
    """
    from enrichment_assets.cli.operations.export import export as export_documents
    from enrichment_assets.cli.operations.views import progress_bar

    with _operation_errors(), progress_bar(err, "partitions") as progress:
        task = progress.add_task(f"exporting {what}", total=None)
        result = export_documents(
            _lake(),
            what=what,
            fmt=fmt,
            out=out_path,
            partition=partition,
            status=status_filter,
            force=force,
            on_partition=lambda done, total: progress.update(task, completed=done, total=total),
        )
    out.print(
        plain(
            f"wrote {result.documents} {what} document(s) from {result.partitions} partition(s) "
            f"as {fmt} to {result.out.resolve()}"
        )
    )


@contextmanager
def _operation_errors() -> Iterator[None]:
    """The operations' errors as the command line reports them (exit 1, or 2 for usage)."""
    from enrichment_assets.cli.operations import OperationError, OperationUsageError

    try:
        yield
    except OperationUsageError as error:
        raise typer.BadParameter(str(error)) from error
    except OperationError as error:
        raise CommandError(str(error)) from error


def _print_json(payload: object) -> None:
    sys.stdout.write(dumps_json(payload))


@app.command()
def report(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    as_html: Annotated[
        bool,
        typer.Option("--html", help="Write the health page (charts); print it and the Data Docs."),
    ] = False,
) -> None:
    """Health across all partitions: counts per layer, metrics and threshold levels.

    Thresholds (README, "Quality gates and health"): completeness < 85 % warning,
    < 70 % critical; quality score < 80 warning, < 60 critical; backlog > 1000 and
    failure rate > 20 % critical. Each gets a level: ok, warning or critical.

    Example: enrich report --json
    """
    from enrichment_assets.cli.instance import dagster_instance
    from enrichment_assets.cli.summaries_report import summaries_line, summaries_report
    from enrichment_assets.defs.automation.retry_state import flagged_partitions
    from enrichment_assets.defs.run_liveness import active_partitions
    from enrichment_assets.health_metrics import pipeline_health
    from enrichment_assets.health_report import (
        data_docs_index,
        health_tables,
        report_payload,
        write_health_files,
    )
    from enrichment_assets.lake import Lake
    from enrichment_assets.low_confidence import LowConfidenceRule
    from enrichment_assets.queries import layer_counts

    lake = Lake(_data_dir())
    counts = layer_counts(lake)
    # Unfinished records count as pending only where a live run works on them.
    with dagster_instance() as instance:
        health = pipeline_health(
            lake,
            active_partitions(instance, lake),
            flagged_partitions(instance),
            low_confidence=LowConfidenceRule.from_env(),
        )
    if as_html:
        _, page = write_health_files(lake, health, counts["total"])
        docs = data_docs_index(lake)
        out.print(plain(f"health page: {page}"), soft_wrap=True)
        out.print(
            plain(f"data docs:   {docs.resolve()}" if docs.exists() else "data docs:   none yet"),
            soft_wrap=True,
        )
        return
    if as_json:
        payload = {
            **report_payload(health, counts["total"], lake),
            "partitions": {k: v for k, v in counts.items() if k != "total"},
            "summaries": summaries_report(lake),
        }
        _print_json(payload)
        return
    out.print(_counts_table(counts, "rows per layer"))
    out.print(health_tables(health))
    out.print(summaries_line(summaries_report(lake)))


db_app = typer.Typer(
    help="The application database (ENRICH_APP_DB_URL): schema and reference data.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="postgresql:// URL; default ENRICH_APP_DB_URL.", show_default=False
        ),
    ] = None,
    seed_reference: Annotated[
        bool,
        typer.Option(
            "--seed-reference", help="Copy the seed files into reference tables still empty."
        ),
    ] = False,
) -> None:
    """Apply the SQL migrations of sql/postgres/ not applied yet (safe to re-run).

    Example: ENRICH_APP_DB_URL=postgresql://app@db/app enrich db upgrade --seed-reference
    """
    import psycopg

    from enrichment_assets.app_db import app_db_url, seed_reference_tables, upgrade
    from enrichment_assets.postgres_url import libpq_url
    from enrichment_assets.reference import REFERENCE_TABLES, SEEDS_DIR

    target = libpq_url(url, "--url") if url else app_db_url()
    if target is None:
        raise CommandError("no application database: set ENRICH_APP_DB_URL or pass --url")
    try:
        applied = upgrade(target)
        seeded = (
            seed_reference_tables(target, SEEDS_DIR, REFERENCE_TABLES) if seed_reference else {}
        )
    except psycopg.OperationalError as error:
        first = (str(error).strip().splitlines() or [""])[0]
        raise CommandError(f"cannot reach the application database: {first}") from error
    for migration in applied:
        out.print(f"applied {migration.version:04d}_{migration.name}")
    if not applied:
        out.print("schema up to date")
    for table, rows in seeded.items():
        out.print(f"seeded {table}: {rows} rows" if rows else f"kept {table}: already has rows")


def _say_error(message: str) -> None:
    """`message` as one line on stderr; this never raises.

    Plain `write`, not Rich: the message can quote input (`[/nope]`, an ESC), and the
    error path is the last place that may fail.
    """
    with suppress(Exception):
        sys.stderr.write(visible(message.strip()) + "\n")
        sys.stderr.flush()


def _message(error: BaseException, *, first_line: bool = False) -> str:
    """The error's text (its first line only when asked); never raises."""
    try:
        text = str(error).strip()
    except Exception:  # a broken __str__ must not cost the exit code
        return type(error).__name__
    return (text.splitlines() or [""])[0] if first_line else text


def _push_working_copies() -> None:
    """With the lake on object storage: what this command wrote, pushed (also on failure)."""
    from enrichment_assets.object_store import push_opened

    push_opened()


def main() -> None:
    """Entry point: one-line errors, no tracebacks (unless ENRICH_DEBUG=1)."""
    # typer bundles its own click; its exceptions are where usage errors come from.
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
    from typer.exceptions import Abort, Exit

    from enrichment_assets.cli.malloc_arenas import (
        limit_malloc_arenas,
        purge_polars_memory_promptly,
    )

    limit_malloc_arenas()  # before the run's threads start (see `malloc_arenas`)
    purge_polars_memory_promptly()  # before Polars is imported (see `malloc_arenas`)
    try:
        # Not standalone: usage errors come back here, to be told in one line too.
        try:
            result = app(standalone_mode=False)
        finally:
            _push_working_copies()
        sys.exit(result if isinstance(result, int) else 0)
    except Exit as done:
        sys.exit(done.exit_code)
    except NoArgsIsHelpError as error:
        if error.ctx is not None:
            out.print(error.ctx.get_help(), highlight=False)
        sys.exit(2)
    except UsageError as error:
        command = error.ctx.command_path if error.ctx else "enrich"
        _say_error(f"enrich: usage error: {error.format_message()} (see '{command} --help')")
        sys.exit(2)
    except ClickException as error:
        _say_error(f"enrich: error: {error.format_message()}")
        sys.exit(error.exit_code)
    except Abort:
        _say_error("enrich: interrupted")
        sys.exit(130)
    except (CommandError, PostgresUrlError, LakeStoreError) as error:
        _say_error(f"enrich: error: {_message(error)}")
        sys.exit(1)
    except KeyboardInterrupt:
        _say_error("enrich: interrupted")
        sys.exit(130)
    except Exception as error:  # a bug or an environment problem: still one line
        if env_settings.raw("ENRICH_DEBUG"):
            raise
        _say_error(f"enrich: error: {type(error).__name__}: {_message(error, first_line=True)}")
        sys.exit(1)


def console_main() -> None:
    """The `enrich` console script: `main`, then an immediate exit.

    With Dagster and Great Expectations loaded, the interpreter's own teardown is a
    second or two of garbage collection that frees nothing anyone needs. Once the
    command is done, the exit handlers run (worker processes stop, libraries clean
    up), the output is flushed, and the process ends with the command's status.
    """
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError):  # a closed pipe (`enrich report --json | head -1`)
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
