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

import glob
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pyarrow.parquet as pq
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from enrichment_assets.assets.layer_io import failed_ids
from enrichment_assets.assets.llm_spend import run_budget
from enrichment_assets.assets.metadata import (
    check_outcomes,
    layer_table,
    path_value,
    preview,
    unchanged_result,
)
from enrichment_assets.assets.normalized import normalized_conversations
from enrichment_assets.checks.gx_suites import GateReport, gate_specs, validate_layer
from enrichment_assets.enrichers.base import CONVERSATION_INPUT_SCHEMA, Enricher
from enrichment_assets.enrichers.budget import SpendBudget
from enrichment_assets.enrichers.code_version import enrichment_code_version
from enrichment_assets.enrichers.settings import (
    LLMResource,
    LLMSettings,
    enricher_kinds,
    enricher_tags,
)
from enrichment_assets.env import env_int
from enrichment_assets.faults import fault_point
from enrichment_assets.fingerprints import write_record
from enrichment_assets.lake import Lake, atomic_path, hidden_temp
from enrichment_assets.partitions import summary_days
from enrichment_assets.resources import AppDatabaseResource, LakeResource, PiiRedactionResource
from enrichment_assets.sql_files import load_sql

ASSET_NAME = "conversation_summaries"
LAYER = "summaries"
NORMALIZED_KEY = AssetKey("normalized_conversations")
# Metadata key: the newest normalized materialization (event storage id) a run could see.
WATERMARK_KEY = "normalized_watermark"
# Run tag set by the `stale_summaries` sensor: why the day runs again (shown in the UI).
STALE_REASON_TAG = "enrich/stale_reason"
# Namespace of summary ids: uuid5(namespace, [user_id, window_start]).
SUMMARY_ID_NAMESPACE = uuid.UUID("4f0d5a52-6c2e-5b8e-9a51-3f1c7e2d8b60")

# The columns of the normalized layer the summaries read, for an empty lake.
_NORMALIZED_COLUMNS = {
    "partition": pl.String(),
    "conversation_id": pl.String(),
    "user_id": pl.String(),
    "persona_id": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "status": pl.String(),
    "messages": CONVERSATION_INPUT_SCHEMA["messages"],
}


class SummaryWindowConfig(Config):
    """Which user-windows get a summary; defaults from the environment, else 5 and 24."""

    min_messages: int = Field(
        default=env_int("ENRICH_SUMMARIES_MIN_MESSAGES", 5),
        description="A (user, window) needs at least this many messages "
        "(system prompts excluded) to be summarized. Env: ENRICH_SUMMARIES_MIN_MESSAGES.",
    )
    window_hours: int = Field(
        default=env_int("ENRICH_SUMMARIES_WINDOW_HOURS", 24),
        description="Window length in hours, aligned to the day's 00:00 UTC; must divide 24. "
        "Env: ENRICH_SUMMARIES_WINDOW_HOURS.",
    )

    def check(self) -> None:
        if self.min_messages < 1:
            raise ValueError(f"min_messages={self.min_messages}: expected at least 1")
        if self.window_hours < 1 or 24 % self.window_hours:
            raise ValueError(
                f"window_hours={self.window_hours}: expected a divisor of 24 "
                "(1, 2, 3, 4, 6, 8, 12 or 24) so that windows tile the day"
            )


def summary_id(user_id: str, window_start: datetime) -> str:
    """The deterministic id of one user-window (also its pseudo-conversation id)."""
    key = orjson.dumps([user_id, window_start.astimezone(UTC).isoformat()])
    return str(uuid.uuid5(SUMMARY_ID_NAMESPACE, key.decode()))


def summaries_path(lake: Lake, day: str) -> Path:
    return lake.layer_path(LAYER, day)


def summaries_export_path(lake: Lake, day: str) -> Path:
    return lake.export_path(LAYER, day)


def day_start(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)


def summary_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that computes in UTC (day and window bounds are UTC)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _status_file(normalized_file: str) -> str:
    """The status file of the partition a normalized file belongs to (same lake, same name)."""
    path = Path(normalized_file)
    return str(path.parent.parent / "status" / path.name)


def register_normalized(con: duckdb.DuckDBPyConnection, files: str | list[str]) -> None:
    """Expose normalized Parquet (a glob or files) as `normalized_conversations` and
    `summary_messages`; nothing is read until a query runs, and then only its columns.

    Only the current version of each conversation counts: a record whose status is no
    longer `completed` (superseded by a newer version since) is left out.
    """
    matched = glob.glob(files) if isinstance(files, str) else [f for f in files if Path(f).exists()]
    statuses = [s for s in map(_status_file, matched) if Path(s).exists()]
    if matched and statuses:
        current = (
            con.read_parquet(statuses, union_by_name=True)
            .filter("status::VARCHAR = 'completed'")
            .select("partition, record_index")
        )
        con.read_parquet(matched, union_by_name=True).join(
            current, "partition, record_index", how="semi"
        ).select(", ".join(_NORMALIZED_COLUMNS)).create_view("normalized_conversations")
    else:
        con.register("normalized_conversations", pl.DataFrame(schema=_NORMALIZED_COLUMNS))
    con.execute(load_sql("conversation_summaries_messages"))


def user_windows(
    con: duckdb.DuckDBPyConnection, day: str, config: SummaryWindowConfig
) -> pl.DataFrame:
    """The day's user-windows worth a summary, each with its id and messages."""
    windows = con.sql(
        load_sql("conversation_summaries_windows"),
        params={
            "day_start": day_start(day),
            "window_hours": config.window_hours,
            "min_messages": config.min_messages,
        },
    ).pl()
    ids = [
        summary_id(user, start) for user, start in windows.select("user_id", "window_start").rows()
    ]
    return windows.with_columns(pl.Series("summary_id", ids, dtype=pl.String()))


def annotate_windows(windows: pl.DataFrame, enricher: Enricher, chunk_rows: int) -> pl.DataFrame:
    """Enricher annotations of each user-window, fed as a CONVERSATION_INPUT_SCHEMA frame."""
    conversations = windows.select(
        pl.col("summary_id").alias("conversation_id"),
        pl.col("messages").cast(CONVERSATION_INPUT_SCHEMA["messages"]),
    )
    chunks = [
        enricher.annotate(conversations.slice(offset, chunk_rows))
        for offset in range(0, max(conversations.height, 1), chunk_rows)
    ]
    return pl.concat(chunks, how="vertical_relaxed")


@contextmanager
def day_connection(lake: Lake, day: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A summary connection whose `summary_messages` holds one day's messages, read from
    every normalized partition once (its fingerprint and its windows read them there)."""
    con = summary_connection()
    try:
        register_normalized(con, lake.layer_glob("normalized"))
        con.execute(load_sql("conversation_summaries_day_messages"), {"day_start": day_start(day)})
        con.execute(load_sql("conversation_summaries_day_view"))
        yield con
    finally:
        con.close()


def summarize_day(
    con: duckdb.DuckDBPyConnection,
    day: str,
    config: SummaryWindowConfig,
    enricher: Enricher,
    *,
    generated_at: datetime,
    chunk_rows: int = 20_000,
) -> pl.DataFrame:
    """The summaries of one UTC day (`day_connection`) over every normalized partition (not
    yet written)."""
    config.check()
    windows = user_windows(con, day, config)
    annotations = annotate_windows(windows, enricher, chunk_rows)
    con.register("summary_windows", windows.drop("messages"))
    con.register("summary_annotations", annotations)
    return con.sql(
        load_sql("conversation_summaries"),
        params={
            "day": day,
            "min_messages": config.min_messages,
            "window_hours": config.window_hours,
            "generated_at": generated_at,
        },
    ).pl()


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


def write_summaries_export(lake: Lake, day: str) -> Path | None:
    """Replace `export/summaries/<day>.jsonl` atomically from the day's Parquet file; a day
    without a summary has no export file (an earlier one is removed): None."""
    target = summaries_export_path(lake, day)
    if pq.ParquetFile(summaries_path(lake, day)).metadata.num_rows == 0:
        target.unlink(missing_ok=True)
        return None
    con = summary_connection()
    try:
        con.execute(load_sql("macros"))
        with atomic_path(target) as tmp:
            con.execute(
                load_sql("conversation_summaries_export"),
                [str(summaries_path(lake, day)), str(tmp)],
            )
    finally:
        con.close()
    return target


def latest_normalized_storage_id(context: AssetExecutionContext) -> int:
    """The newest normalized materialization recorded before this run reads the lake."""
    records = context.instance.fetch_materializations(NORMALIZED_KEY, limit=1).records
    return records[0].storage_id if records else 0


@asset(
    partitions_def=summary_days,
    group_name="summaries",
    kinds={"duckdb", "parquet", *enricher_kinds()},
    tags=enricher_tags(),
    # The same annotation code version as enriched_conversations (`code_version.py`).
    code_version=enrichment_code_version(LLMSettings.from_env()),
    # A day reads every batch: which batches hold its messages is only known from their data.
    # Backfills over a range of days run one day per run (the asset reads one partition key).
    deps=[AssetDep(normalized_conversations, partition_mapping=AllPartitionMapping())],
    check_specs=gate_specs(ASSET_NAME, summary_days),
)
def conversation_summaries(
    context: AssetExecutionContext,
    config: SummaryWindowConfig,
    lake: LakeResource,
    enricher: LLMResource,
    app_db: AppDatabaseResource,
    pii: PiiRedactionResource,
) -> MaterializeResult:
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
    """
    store = lake.lake
    day = context.partition_key
    # Taken before reading: a normalized batch materialized later may be missed, so the
    # sensor counts this day stale for any batch newer than the watermark.
    watermark = latest_normalized_storage_id(context)
    config.check()
    settings = enricher.settings()
    # The day's inputs, before reading them too: a change meanwhile makes the next run's
    # fingerprint differ, so it does the work again.
    from enrichment_assets.summary_inputs import fingerprints_of_days, unchanged_day

    with day_connection(store, day) as con:
        inputs = fingerprints_of_days(con, [day], config, settings)[day]
        if (previous := unchanged_day(store, day, inputs)) is not None:
            context.log.info(
                f"{day}: inputs unchanged since run {previous.run_id}: nothing recomputed, "
                "files left as they were"
            )
            path = {"path": path_value(summaries_path(store, day))}
            return unchanged_result(previous, ASSET_NAME, {WATERMARK_KEY: watermark, **path})
        summaries, annotator, budget = _summaries_of(context, con, config, enricher, pii, lake)

    gate = replace_summaries(store, day, summaries)
    fault_point("summaries")
    target = summaries_path(store, day)
    metadata: dict[str, object] = {
        # The day's file: this run's rows, or the last ones that passed when the gate held.
        **(layer_table(target) if target.exists() else {"dagster/row_count": summaries.height}),
        "users": summaries["user_id"].n_unique(),
        "messages_summarized": int(summaries["message_count"].sum()),
        "failed_annotations": int(summaries["error"].is_not_null().sum()),
        "window": f"[{day_start(day).isoformat()}, "
        f"{(day_start(day) + timedelta(days=1)).isoformat()}) in "
        f"{config.window_hours} h windows",
        "min_messages": config.min_messages,
        "enricher": annotator,
        **({"llm_cost_usd": round(budget.spent_usd, 6)} if annotator != "heuristic" else {}),
        **({"llm_budget_usd": budget.limit_usd} if budget.limit_usd is not None else {}),
        WATERMARK_KEY: watermark,
        "path": path_value(target),
        "preview": preview(
            summaries,
            ["user_id", "persona_id", "window_start", "message_count", "summary", "confidence"],
        ),
    }
    if gate.blocked_reason is None:
        _publish_day(context, store, app_db, summaries, metadata)
        # Only a day whose annotations all came back is left alone on the same inputs.
        if metadata["failed_annotations"] == 0:
            _record_day(context, store, inputs, metadata, gate)
    else:
        # Keep the last file, export and publication that passed: a blocked day changes none.
        context.log.error(f"{day}: summaries kept as they were: {gate.blocked_reason}")
        metadata["withheld"] = MetadataValue.text(gate.blocked_reason)
    if reason := context.run.tags.get(STALE_REASON_TAG):
        metadata["rerun_reason"] = MetadataValue.text(reason)
    return MaterializeResult(metadata=metadata, check_results=gate.check_results)


def _publish_day(
    context: AssetExecutionContext,
    store: Lake,
    app_db: AppDatabaseResource,
    summaries: pl.DataFrame,
    metadata: dict[str, object],
) -> None:
    """The export file and, with an application database, its rows of the day."""
    day = context.partition_key
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
    store: Lake,
    inputs: str,
    metadata: dict[str, object],
    gate: GateReport,
) -> None:
    """Remember what the day's files were computed from: the same inputs skip the work."""
    from enrichment_assets.summary_inputs import published_files, record_path

    day = context.partition_key
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
    con: duckdb.DuckDBPyConnection,
    config: SummaryWindowConfig,
    enricher: LLMResource,
    pii: PiiRedactionResource,
    lake: LakeResource,
) -> tuple[pl.DataFrame, str, SpendBudget]:
    """The day's summaries by the configured enricher, within the run's LLM budget; the
    enricher's name and the budget (what it spent)."""
    day = context.partition_key
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
        con, day, config, annotator, generated_at=datetime.now(UTC), chunk_rows=lake.chunk_rows
    )
    context.log.info(
        f"{day}: {summaries.height} summaries (min_messages={config.min_messages}, "
        f"window_hours={config.window_hours}, enricher={annotator.name})"
    )
    return summaries, annotator.name, budget
