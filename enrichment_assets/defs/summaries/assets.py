"""`conversation_summaries`: per user and time window, one summary, per UTC day.

Replaces the worker that summarized each user's last 24 hours every 5 minutes. A day
partition reads the messages of that day from every normalized partition in DuckDB
(`sql/conversation_summaries_*.sql`), cuts them into `window_hours` windows aligned to
the day, and hands each (user_id, window) holding at least `min_messages` messages (across
all the user's personas) to the configured enricher as one pseudo-conversation whose id is
a uuid5 of (user_id, window_start), the contract's unique key. The day's rows are one Parquet file,
`lake/summaries/<day>.parquet`, replaced whole on every run: re-running a day replaces
its summaries, never duplicates them. `export/summaries/<day>.jsonl` follows when the
gate passes.
"""

import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl
from dagster import (
    AllPartitionMapping,
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from enrichment_assets.defs.checks import GateReport, gate_specs, validate_layer
from enrichment_assets.defs.conversations.layer_io import failed_ids
from enrichment_assets.defs.conversations.normalized import normalized_conversations
from enrichment_assets.defs.conversations.partitions import summary_days
from enrichment_assets.defs.metadata import (
    check_outcomes,
    layer_table,
    path_value,
    preview,
    unchanged_result,
)
from enrichment_assets.defs.resources import (
    AppDatabaseResource,
    LakeResource,
    LLMResource,
    PiiRedactionResource,
)
from enrichment_assets.defs.spend.llm_spend import run_budget
from enrichment_assets.enrichers.budget import SpendBudget
from enrichment_assets.enrichers.code_version import enrichment_code_version
from enrichment_assets.enrichers.settings import LLMSettings, enricher_kinds, enricher_tags
from enrichment_assets.faults import fault_point
from enrichment_assets.fingerprints import PublishedRecord, write_record
from enrichment_assets.lake import Lake, hidden_temp
from enrichment_assets.summary_inputs import fingerprints_of_days, unchanged_day
from enrichment_assets.summary_windows import (
    DayConnection,
    SummaryWindows,
    day_start,
    default_windows,
    scanned_days,
    summaries_path,
    summarize_day,
    write_summaries_export,
)
from enrichment_assets.workers import read_ahead

ASSET_NAME = "conversation_summaries"
SUMMARIES_KEY = AssetKey(ASSET_NAME)
CODE_VERSION = enrichment_code_version(LLMSettings.from_env())
# The materialization tag Dagster's own outputs carry (documented; its constant is private).
CODE_VERSION_TAG = "dagster/code_version"
NORMALIZED_KEY = AssetKey("normalized_conversations")
# Metadata key: the newest normalized materialization (event storage id) a run could see.
WATERMARK_KEY = "normalized_watermark"
# Run tag set by the `stale_summaries` sensor: why the day runs again (shown in the UI).
STALE_REASON_TAG = "enrich/stale_reason"
# The asset's config defaults: the environment's, read once when the code location loads.
_DEFAULT_WINDOWS = default_windows()


class SummaryWindowConfig(Config):
    """Which user-windows get a summary; defaults from the environment, else 5 and 24."""

    min_messages: int = Field(
        default=_DEFAULT_WINDOWS.min_messages,
        description="A (user, window) needs at least this many messages "
        "(system prompts excluded) to be summarized. Env: ENRICH_SUMMARIES_MIN_MESSAGES.",
    )
    window_hours: int = Field(
        default=_DEFAULT_WINDOWS.window_hours,
        description="Window length in hours, aligned to the day's 00:00 UTC; must divide 24. "
        "Env: ENRICH_SUMMARIES_WINDOW_HOURS.",
    )

    def windows(self) -> SummaryWindows:
        """The library's settings (`summary_windows.py`), checked (ValueError when invalid)."""
        windows = SummaryWindows(min_messages=self.min_messages, window_hours=self.window_hours)
        windows.check()
        return windows


def replace_summaries(lake: Lake, day: str, summaries: pl.DataFrame) -> GateReport:
    """Gate the day's new rows, and only when they pass replace its Parquet file.

    The rows go to a temporary file beside `lake/summaries/<day>.parquet`, the GX suite
    runs on that file, and a passing gate renames it onto the day's file (atomic). A
    blocked gate leaves the previous file, hence the previous export and publication,
    as they were. An empty day is a valid, empty file.
    """
    target = summaries_path(lake, day)
    staged = hidden_temp(target)
    try:
        summaries.write_parquet(staged, compression="zstd")
        gate = validate_layer(lake, ASSET_NAME, staged, day)
        if gate.blocked_reason is None:
            os.replace(staged, target)
        return gate
    finally:
        staged.unlink(missing_ok=True)


def latest_normalized_storage_id(context: AssetExecutionContext) -> int:
    """The newest normalized materialization recorded before this run reads the lake."""
    records = context.instance.fetch_materializations(NORMALIZED_KEY, limit=1).records
    return records[0].storage_id if records else 0


# Dagster marks `backfill_policy` beta; its warning says nothing the operator can act on.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*backfill_policy.*")
    _summaries_asset = asset(
        partitions_def=summary_days,
        group_name="summaries",
        kinds={"duckdb", "parquet", *enricher_kinds(LLMSettings.from_env())},
        tags=enricher_tags(LLMSettings.from_env()),
        # The same annotation code version as enriched_conversations (`code_version.py`).
        code_version=CODE_VERSION,
        # A day reads every batch: which batches hold its messages is only known from their data.
        deps=[AssetDep(normalized_conversations, partition_mapping=AllPartitionMapping())],
        check_specs=gate_specs(ASSET_NAME, summary_days),
        # A backfill over days (or `enrich run`) is one run: one scan of the normalized layer
        # for all its days. Each day's materialization and checks are its own events.
        backfill_policy=BackfillPolicy.single_run(),
        output_required=False,
    )


@_summaries_asset
def conversation_summaries(
    context: AssetExecutionContext,
    config: SummaryWindowConfig,
    lake: LakeResource,
    enricher: LLMResource,
    app_db: AppDatabaseResource,
    pii: PiiRedactionResource,
) -> Iterator[AssetMaterialization | AssetCheckEvaluation | Output]:
    """Per user and time window of the UTC day: summary, key topics, tone.

    For each user_id with at least `min_messages` messages (system prompts excluded) in a
    `window_hours` window aligned to the day, the window's messages from every normalized
    partition, across the user's personas, go to the configured enricher as one
    pseudo-conversation. Rows: summary, topics, emotional tone, sentiment, confidence,
    message count, compression ratio (summary / source characters), the window's most
    frequent persona (`persona_id`) and all its personas (`persona_ids`), enricher, model,
    generated_at. Unique on (user_id, window_start): the day's file is replaced whole, so
    re-running a day (the schedule, a backfill, the `stale_summaries` sensor after late
    data) replaces its rows. The GX gate runs on the new rows before they replace
    `lake/summaries/<day>.parquet`; when it passes, `export/summaries/<day>.jsonl` follows
    and, with an application database (`ENRICH_APP_DB_URL`), its `conversation_summaries`
    rows of the day are replaced in one transaction. A blocked gate changes nothing.
    A run over several days reads the normalized layer once for all of them; a day whose
    inputs did not change since its files were published is neither computed nor rewritten.
    """
    days = list(context.partition_keys)
    # Taken before reading: a normalized batch materialized later may be missed, so the
    # sensor counts this day stale for any batch newer than the watermark.
    watermark = latest_normalized_storage_id(context)
    job = _DaysJob(context, config.windows(), enricher, app_db, pii, lake, watermark)
    with scanned_days(lake.lake, days) as open_day:
        for day, work in job.computed(days, open_day):
            yield from _day_events(context, day, job.finish(day, work))
    # The checks' outputs (what a downstream step would wait on): their results are above.
    for key in context.selected_asset_check_keys:
        yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))


def _day_events(
    context: AssetExecutionContext, day: str, result: MaterializeResult
) -> Iterator[AssetMaterialization | AssetCheckEvaluation]:
    """One day's materialization, then its check results, each for that day's partition
    (a run over a range of days has no single partition key to give them)."""
    yield AssetMaterialization(
        asset_key=SUMMARIES_KEY,
        partition=day,
        metadata=result.metadata,
        tags={CODE_VERSION_TAG: CODE_VERSION},
    )
    for check in result.check_results:
        spec = context.assets_def.get_spec_for_check_key(
            AssetCheckKey(SUMMARIES_KEY, str(check.check_name))
        )
        yield AssetCheckEvaluation(
            asset_key=SUMMARIES_KEY,
            check_name=str(check.check_name),
            passed=check.passed,
            metadata=check.metadata,
            severity=check.severity,
            description=check.description,
            blocking=spec.blocking,
            partition=day,
        )


@dataclass
class _DayWork:
    """What `compute` found for a day: its inputs' fingerprint and either its last
    publication (unchanged inputs) or its new summaries, enricher name and budget."""

    inputs: str
    previous: PublishedRecord | None = None
    summaries: pl.DataFrame | None = None
    annotator: str = ""
    budget: SpendBudget | None = None


@dataclass
class _DaysJob:
    """What every day of one run shares: its config, resources and watermark."""

    context: AssetExecutionContext
    windows: SummaryWindows
    enricher: LLMResource
    app_db: AppDatabaseResource
    pii: PiiRedactionResource
    lake: LakeResource
    watermark: int

    def computed(
        self, days: list[str], open_day: Callable[[str], DayConnection]
    ) -> Iterator[tuple[str, _DayWork]]:
        """(day, its work) for each day in order. With an offline enricher (the
        heuristic: DuckDB and Polars, which release the GIL), the next day is
        computed in a thread while this one is gated and published (GX holds the GIL):
        the 7 days of 100,000 conversations took 21.7 s against 25.5 s one after the other."""

        def each_day() -> Iterator[tuple[str, _DayWork]]:
            for day in days:
                with open_day(day) as con:
                    yield day, self.compute(day, con)

        ahead = self.enricher.settings().offline
        return read_ahead(each_day()) if ahead else each_day()

    def compute(self, day: str, con: duckdb.DuckDBPyConnection) -> _DayWork:
        """The day's inputs and, unless they are those of its last publication, its
        summaries (not yet gated)."""
        store = self.lake.lake
        inputs = fingerprints_of_days(con, [day], self.windows, self.enricher.settings())[day]
        if (previous := unchanged_day(store, day, inputs)) is not None:
            return _DayWork(inputs, previous=previous)
        summaries, annotator, budget = _summaries_of(
            self.context, day, con, self.windows, self.enricher, self.pii, self.lake
        )
        return _DayWork(inputs, summaries=summaries, annotator=annotator, budget=budget)

    def finish(self, day: str, work: _DayWork) -> MaterializeResult:
        """The day's result: its inputs unchanged, nothing recomputed; else its summaries
        gated and (when they pass) published and recorded."""
        store, context = self.lake.lake, self.context
        if work.previous is not None:
            context.log.info(
                f"{day}: inputs unchanged since run {work.previous.run_id}: nothing "
                "recomputed, files left as they were"
            )
            path = {"path": path_value(summaries_path(store, day))}
            return unchanged_result(
                work.previous, ASSET_NAME, {WATERMARK_KEY: self.watermark, **path}
            )
        summaries, budget = work.summaries, work.budget
        assert summaries is not None and budget is not None  # computed: not unchanged
        context.log.info(
            f"{day}: {summaries.height} summaries (min_messages={self.windows.min_messages}, "
            f"window_hours={self.windows.window_hours}, enricher={work.annotator})"
        )
        gate = replace_summaries(store, day, summaries)
        fault_point("summaries")
        metadata = _day_metadata(store, day, summaries, self.windows, work.annotator, budget)
        metadata[WATERMARK_KEY] = self.watermark
        if gate.blocked_reason is None:
            _publish_day(day, store, self.app_db, summaries, metadata)
            # Only a day whose annotations all came back is left alone on the same inputs.
            if metadata["failed_annotations"] == 0:
                _record_day(context, day, store, work.inputs, metadata, gate)
        else:
            # Keep the last file, export and publication that passed: a blocked day changes none.
            context.log.error(f"{day}: summaries kept as they were: {gate.blocked_reason}")
            metadata["withheld"] = MetadataValue.text(gate.blocked_reason)
        if reason := context.run.tags.get(STALE_REASON_TAG):
            metadata["rerun_reason"] = MetadataValue.text(reason)
        return MaterializeResult(metadata=metadata, check_results=gate.check_results)


def _day_metadata(
    store: Lake,
    day: str,
    summaries: pl.DataFrame,
    windows: SummaryWindows,
    annotator: str,
    budget: SpendBudget,
) -> dict[str, object]:
    """What the day's materialization tells the operator."""
    target = summaries_path(store, day)
    start = day_start(day)
    return {
        # The day's file: this run's rows, or the last ones that passed when the gate held.
        **(layer_table(target) if target.exists() else {"dagster/row_count": summaries.height}),
        "users": summaries["user_id"].n_unique(),
        "messages_summarized": int(summaries["message_count"].sum()),
        "failed_annotations": int(summaries["error"].is_not_null().sum()),
        "window": f"[{start.isoformat()}, {(start + timedelta(days=1)).isoformat()}) in "
        f"{windows.window_hours} h windows",
        "min_messages": windows.min_messages,
        "enricher": annotator,
        **({"llm_cost_usd": round(budget.spent_usd, 6)} if annotator != "heuristic" else {}),
        **({"llm_budget_usd": budget.limit_usd} if budget.limit_usd is not None else {}),
        "path": path_value(target),
        "preview": preview(
            summaries,
            ["user_id", "persona_id", "window_start", "message_count", "summary", "confidence"],
        ),
    }


def _publish_day(
    day: str,
    store: Lake,
    app_db: AppDatabaseResource,
    summaries: pl.DataFrame,
    metadata: dict[str, object],
) -> None:
    """The export file and, with an application database, its rows of the day."""
    if (export := write_summaries_export(store, day)) is not None:
        metadata["export"] = path_value(export)
    if app_db.app_db_url is not None:
        from enrichment_assets.app_db import publish_summaries  # psycopg: only when set

        published = publish_summaries(app_db.app_db_url, day, summaries)
        metadata["published"] = MetadataValue.text(
            f"{published.rows} rows to the application database's {published.table} "
            f"({published.upserted} upserted, {published.deleted} deleted)"
        )


def _record_day(
    context: AssetExecutionContext,
    day: str,
    store: Lake,
    inputs: str,
    metadata: dict[str, object],
    gate: GateReport,
) -> None:
    """Remember what the day's files were computed from: the same inputs skip the work."""
    from enrichment_assets.summary_inputs import published_files, record_path

    write_record(
        record_path(store, day),
        published_files(store, day),
        fingerprint=inputs,
        run_id=context.run.run_id,
        metadata={
            k: v
            for k, v in metadata.items()
            if isinstance(v, int | float | str) and k not in ("path", WATERMARK_KEY)
        },
        checks=check_outcomes(gate.check_results),
    )


def _summaries_of(
    context: AssetExecutionContext,
    day: str,
    con: duckdb.DuckDBPyConnection,
    windows: SummaryWindows,
    enricher: LLMResource,
    pii: PiiRedactionResource,
    lake: LakeResource,
) -> tuple[pl.DataFrame, str, SpendBudget]:
    """The day's summaries by the configured enricher, within the run's LLM budget; the
    enricher's name and the budget (what it spent)."""
    settings = enricher.settings()
    cache_dir = lake.lake.data_dir / "cache" / "enrichment"
    # The run's LLM budget and today's daily limit stop its sending too (`llm_spend.py`).
    budget = run_budget(context.instance, settings, None)
    annotator = enricher.build_enricher(  # through the resource, as ever
        cache_dir, pii_mode=pii.pii_mode, phone_region=pii.region, app_db_url=lake.lake.app_db_url
    )
    if hasattr(annotator, "budget"):
        annotator.budget = budget
    if hasattr(annotator, "failed_before"):  # one attempt each this run (`_policy`)
        annotator.failed_before = failed_ids(
            summaries_path(lake.lake, day), "summary_id", pl.col("error")
        )
    summaries = summarize_day(
        con, day, windows, annotator, generated_at=datetime.now(UTC), chunk_rows=lake.chunk_rows
    )
    return summaries, annotator.name, budget
