"""`enriched_conversations`: reference metadata, stats and AI annotations, per conversation."""

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetObservation,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from pydantic import Field

from enrichment_assets.defs.checks import (
    gate_specs,
    partitioned_check_spec,
    prewarm_gate,
    run_gate,
)
from enrichment_assets.defs.conversations.layer_io import (
    empty_frame,
    failed_ids,
    partition_writer,
    read_chunks,
    row_count,
    write_layer,
)
from enrichment_assets.defs.conversations.partitions import batch_partitions
from enrichment_assets.defs.conversations.validated import validated_conversations
from enrichment_assets.defs.metadata import (
    ProgressLog,
    layer_table,
    path_value,
    preview,
    rows_conserved,
)
from enrichment_assets.defs.resources import LakeResource, LLMResource, PiiRedactionResource
from enrichment_assets.defs.spend.llm_spend import committed_to_batches, estimate_layer, run_budget
from enrichment_assets.enrichers.base import (
    Enricher,
    concurrent_chunks,
    conform_annotations,
    empty_annotations,
)
from enrichment_assets.enrichers.batch_ledger import remove_batches
from enrichment_assets.enrichers.budget import SpendBudget
from enrichment_assets.enrichers.code_version import enrichment_code_version
from enrichment_assets.enrichers.pricing import CostEstimate
from enrichment_assets.enrichers.settings import LLMSettings, enricher_kinds, enricher_tags
from enrichment_assets.faults import fault_point
from enrichment_assets.lake import Lake
from enrichment_assets.low_confidence import (
    ATTEMPT_COLUMNS,
    LOW_CONFIDENCE,
    RERUN,
    best_annotations,
    record_attempts,
)
from enrichment_assets.redaction import PII_KINDS
from enrichment_assets.reference import load_reference
from enrichment_assets.sql_files import load_sql
from enrichment_assets.status import apply_changes
from enrichment_assets.workers import map_ordered_threads

if TYPE_CHECKING:  # the Batch API mode loads the OpenAI client: only when configured
    from enrichment_assets.enrichers.batch_submission import BatchProgress


class EnrichmentScope(Config):
    """Which conversations a run (re-)enriches; by default, all of the partition."""

    conversation_ids: list[str] = Field(
        default_factory=list,
        description=(
            "Re-enrich only these conversations; the others keep their previous "
            "enrichment (empty: all)."
        ),
    )
    force: bool = Field(
        default=False,
        description="Bypass the enrichment cache for the conversations enriched in this run.",
    )
    low_confidence: bool = Field(
        default=False,
        description=(
            "Re-ask `conversation_ids` under the low-confidence rule: the escalation model "
            "when one is set, no cache; the better answer of old and new stays current."
        ),
    )


def previous_annotations(path: Path) -> pl.DataFrame | None:
    """The annotations a previous materialization of this partition wrote, if any."""
    if not path.exists():
        return None
    previous = pl.read_parquet(path, columns=["conversation_id", "enrichment"])
    return conform_annotations(previous.unnest("enrichment"))


def annotate_chunk(
    chunk: pl.DataFrame, enricher: Enricher, keep: pl.DataFrame | None = None
) -> pl.DataFrame:
    """One annotation per conversation id of `chunk`.

    Ids found in `keep` (previous annotations) are not sent to the enricher. A
    duplicated id (caught by the uniqueness gate) gets one annotation, so it
    cannot multiply rows in the join.
    """
    unique = chunk.unique("conversation_id", keep="first", maintain_order=True)
    kept = None
    if keep is not None:
        kept = keep.join(unique.select("conversation_id"), on="conversation_id", how="semi")
        unique = unique.join(kept.select("conversation_id"), on="conversation_id", how="anti")
    fresh = conform_annotations(enricher.annotate(unique))
    annotations = fresh if kept is None else pl.concat([fresh, kept])
    return annotations.unique("conversation_id", keep="first", maintain_order=True)


def _numeric_stats(annotator: Enricher) -> dict[str, float]:
    """The numeric figures of the enricher's last `annotate` (tokens, cost, cache hits)."""
    stats = getattr(annotator, "stats", None)
    if stats is None:
        return {}
    return {
        name: value
        for name, value in stats.as_metadata().items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def enrich_chunk(
    con: duckdb.DuckDBPyConnection, chunk: pl.DataFrame, annotations: pl.DataFrame
) -> pl.DataFrame:
    """The chunk with its reference metadata, stats and annotations (computed in SQL)."""
    con.register("conversations", chunk.to_arrow())
    con.register("annotations", annotations.to_arrow())
    try:
        added = con.sql(load_sql("enriched_conversations")).to_arrow_table()
    finally:
        con.unregister("conversations")
        con.unregister("annotations")
    return chunk.join(
        pl.from_arrow(added),  # type: ignore[arg-type]
        on="record_index",
        how="left",
        maintain_order="left",
    )


_DESCRIPTION = """Validated conversations with reference metadata, stats and AI annotations.

Reference metadata (personas, emotional arcs, training topics, templates) and
per-conversation stats (messages per role, characters, token estimate,
duration) come from `sql/enriched_conversations.sql` in DuckDB. AI annotations
(summary, topics, tone, sentiment, label + confidence, quality score) come
from the configured enricher; when it fails for a conversation its AI fields
stay NULL and `enrichment.error` says why.

Run config `conversation_ids` re-enriches only those conversations (the rest
keep their previous annotations); `force` bypasses the enrichment cache.

What an LLM endpoint is sent is redacted in the `egress` and `export` PII modes (the
`pii` resource, `ENRICH_PII_MODE`): personal data is replaced by typed placeholders
before the request and its cache key are made; `pii_redacted` counts them per kind.

In the Batch API mode (`ENRICH_LLM_MODE=batch`) a run submits the partition's requests
and ends with an observation (batch ids, requests, estimate) instead of a
materialization; the `llm_batches` sensor requests the run that applies the results
once the batches end, and the layers downstream follow it.
"""


# A multi-asset of one asset: in the Batch API mode a run may end without materializing
# it (the batch is out), which needs its output and its checks to be skippable.
@multi_asset(
    name="enriched_conversations",
    specs=[
        AssetSpec(
            "enriched_conversations",
            description=_DESCRIPTION,
            partitions_def=batch_partitions,
            group_name="conversations",
            # What the code location was loaded with (ENRICH_ENRICHER): `heuristic` or `openai`.
            kinds={"duckdb", "parquet", *enricher_kinds(LLMSettings.from_env())},
            tags=enricher_tags(LLMSettings.from_env()),
            deps=[validated_conversations],
            # Enricher, model, prompt version, output schema: a change marks partitions stale.
            code_version=enrichment_code_version(LLMSettings.from_env()),
            skippable=True,
        )
    ],
    partitions_def=batch_partitions,
    can_subset=True,
    # Parallel runs share the LLM endpoint's limits: `dagster instance concurrency set llm N`.
    pool="llm",
    check_specs=[
        partitioned_check_spec(
            "validated_rows_conserved",
            asset="enriched_conversations",
            partitions_def=batch_partitions,
            blocking=True,
            description="validated rows = enriched rows, for this partition.",
        ),
        partitioned_check_spec(
            "reference_ids_known",
            asset="enriched_conversations",
            partitions_def=batch_partitions,
            blocking=False,
            description="Reference ids (persona, arc, topic, template) the reference data knows.",
        ),
        *gate_specs("enriched_conversations", batch_partitions),
    ],
)
def enriched_conversations(
    context: AssetExecutionContext,
    config: EnrichmentScope,
    lake: LakeResource,
    enricher: LLMResource,
    pii: PiiRedactionResource,
) -> Iterator[MaterializeResult | AssetObservation]:
    """The enriched layer of one batch partition (see `_DESCRIPTION`)."""
    with partition_writer(lake.lake, context.partition_key, context.run.run_id, context.log.info):
        yield _enriched_conversations(context, config, lake, enricher, pii)


def _batch_metadata(batches: "BatchProgress | None") -> dict[str, object]:
    if batches is None:
        return {}
    from enrichment_assets.defs.conversations.enriched_batches import applied_metadata

    return applied_metadata(batches)


def _budget_and_batches(
    context: AssetExecutionContext,
    config: EnrichmentScope,
    lake: LakeResource,
    annotator: Enricher,
    settings: LLMSettings,
    estimate: CostEstimate | None,
) -> "tuple[SpendBudget, BatchProgress | None]":
    """What the run may spend (a `Failure` over budget: nothing sent) and, in the Batch
    API mode, where its partition's batches are (`defs/conversations/enriched_batches.py`)."""
    store, partition = lake.lake, context.partition_key
    # Batches out (of other partitions) count against the daily limit until applied.
    committed = committed_to_batches(settings, store.data_dir, besides=partition)
    if not (settings.submits_batches and annotator.name == "openai"):
        return run_budget(context.instance, settings, estimate, committed_usd=committed), None
    from enrichment_assets.defs.conversations.enriched_batches import advance_llm_batches

    scoped = config.conversation_ids and store.layer_path("enriched", partition).exists()
    batches = advance_llm_batches(
        context,
        annotator,  # type: ignore[arg-type]
        data_dir=store.data_dir,
        source=store.layer_path("validated", partition),
        chunk_rows=lake.enrich_chunk_rows,
        only=config.conversation_ids if scoped else None,  # as `annotate_chunk` sends
        scope=config.model_dump(),
        estimate=estimate,
        # Checked before anything is submitted; the results of ended batches are paid
        # for already: no budget stops applying them.
        check_budget=lambda: run_budget(
            context.instance, settings, estimate, committed_usd=committed
        ),
    )
    return SpendBudget(), batches


def _enriched_conversations(
    context: AssetExecutionContext,
    config: EnrichmentScope,
    lake: LakeResource,
    enricher: LLMResource,
    pii: PiiRedactionResource,
) -> MaterializeResult | AssetObservation:
    store = lake.lake
    prewarm_gate(store)
    batch = context.partition_key
    source = store.layer_path("validated", batch)
    target = store.layer_path("enriched", batch)
    annotator, settings = _build_annotator(store, config, enricher, pii)
    # Before anything is sent: the estimate against what the run may spend (`llm_spend.py`).
    estimate = estimate_layer(
        annotator, source, lake.enrich_chunk_rows, config.conversation_ids or None
    )
    if estimate is not None:
        context.log.info(f"LLM spend: {estimate.describe()}; {estimate.assumptions()}")
    budget, batches = _budget_and_batches(context, config, lake, annotator, settings, estimate)
    if estimate is not None:
        annotator.budget = budget  # type: ignore[attr-defined]
    _watch_annotator(context, config, annotator, target)
    started = datetime.now(UTC)
    scope, keep, previous = _enrichment_scope(context, config, source, target)
    in_progress = scope.select("record_index").with_columns(
        pl.lit("enrichment_in_progress").alias("status"),
        pl.lit(started).alias("last_attempt"),
    )
    apply_changes(store, batch, in_progress, started)
    if batches is not None and batches.waiting:  # the batch is out: nothing to write yet
        from enrichment_assets.defs.conversations.enriched_batches import waiting_observation

        return waiting_observation(batches, batch)

    tally = _EnrichmentTally(
        scope=scope, in_progress=in_progress, progress=ProgressLog(context.log)
    )
    _write_enriched(
        lake, source, target, annotator, tally, keep, previous if config.low_confidence else None
    )
    attempts_logged = _record_enrichment(store, batch, config, batches, tally, started)
    metadata = {
        **layer_table(target, row_count(target)),
        "enricher": annotator.name,
        **_pii_metadata(annotator, pii.pii_mode, tally),
        **_batch_metadata(batches),
        "annotation_errors": tally.errors,
        "enrichment_attempts_logged": attempts_logged,
        **({"low_confidence_reasked": scope.height} if config.low_confidence else {}),
        "unknown_reference_ids": tally.unknown_refs,
        **{name: round(value, 6) for name, value in sorted(tally.llm_totals.items())},
        **(estimate.as_metadata() if estimate is not None else {}),
        **({"llm_budget_usd": round(budget.limit_usd, 6)} if budget.limit_usd is not None else {}),
    }
    return _enriched_result(store, batch, metadata, tally)


def _record_enrichment(
    store: Lake,
    batch: str,
    config: EnrichmentScope,
    batches: "BatchProgress | None",
    tally: "_EnrichmentTally",
    started: datetime,
) -> int:
    """The enriched conversations' statuses, the Batch API record cleared once applied,
    and the attempts logged (returns how many)."""
    if tally.changes:
        apply_changes(store, batch, pl.concat(tally.changes), datetime.now(UTC))
    if batches is not None and batches.record is not None:  # applied: the record is done
        remove_batches(store.data_dir, batch)
    # Each conversation's attempts, model and confidence (`low_confidence.py`).
    return record_attempts(
        store,
        batch,
        pl.concat(tally.attempts)
        if tally.attempts
        else empty_annotations().select(list(ATTEMPT_COLUMNS)),
        reason=LOW_CONFIDENCE if config.low_confidence else RERUN,
        now=started,
    )


def _build_annotator(
    store: Lake, config: EnrichmentScope, enricher: LLMResource, pii: PiiRedactionResource
) -> tuple[Enricher, LLMSettings]:
    """The run's enricher and its settings (the escalation model for a low-confidence
    re-ask, when one is set)."""
    # The enrichment cache is shared by every partition and process (SQLite, WAL), and by
    # every machine with an application database (`open_enrichment_cache`).
    # A low-confidence re-ask bypasses it too: the cache holds the answer being doubted.
    bypass_cache = config.force or config.low_confidence
    cache_dir = None if bypass_cache else store.data_dir / "cache" / "enrichment"
    options = {"pii_mode": pii.pii_mode, "phone_region": pii.region, "app_db_url": store.app_db_url}
    settings = enricher.settings()
    if config.low_confidence and settings.escalation_model:
        settings = settings.model_copy(update={"model": settings.escalation_model})
        return settings.build_enricher(cache_dir, **options), settings
    # Through the resource: a resource subclass may build its own enricher.
    return enricher.build_enricher(cache_dir, **options), settings


def _watch_annotator(
    context: AssetExecutionContext, config: EnrichmentScope, annotator: Enricher, target: Path
) -> None:
    """What the enricher is told besides the rows: the ids that failed last time, and
    where to log its progress."""
    # A scoped re-enrichment is someone asking again: it gets every attempt.
    if hasattr(annotator, "failed_before") and not config.conversation_ids:
        annotator.failed_before = failed_ids(
            target, "conversation_id", pl.col("enrichment").struct.field("error")
        )
    if hasattr(annotator, "on_progress"):
        annotator.on_progress = lambda done, total: context.log.debug(
            f"{annotator.name}: {done}/{total} conversations of this chunk annotated"
        )


def _enrichment_scope(
    context: AssetExecutionContext, config: EnrichmentScope, source: Path, target: Path
) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None]:
    """The conversations (record_index, conversation_id) this run enriches; the previous
    annotations the others keep; every previous annotation (a low-confidence re-ask
    keeps the better answer)."""
    scope = pl.read_parquet(source, columns=["record_index", "conversation_id"])
    if not config.conversation_ids:
        return scope, None, None
    keep = previous = previous_annotations(target)
    if keep is not None:
        keep = keep.filter(~pl.col("conversation_id").is_in(config.conversation_ids))
        scope = scope.filter(pl.col("conversation_id").is_in(config.conversation_ids))
    context.log.info(f"scope: {scope.height} of the partition's conversations re-enriched")
    return scope, keep, previous


@dataclass
class _EnrichmentTally:
    """What the enrichment of a partition did, chunk after chunk."""

    scope: pl.DataFrame
    in_progress: pl.DataFrame
    progress: ProgressLog
    changes: list[pl.DataFrame] = field(default_factory=list)
    attempts: list[pl.DataFrame] = field(default_factory=list)  # this run's annotations
    first: pl.DataFrame | None = None
    unknown_refs: int = 0
    errors: int = 0
    llm_totals: Counter[str] = field(default_factory=Counter)
    redacted: Counter[str] = field(default_factory=Counter)
    redacted_conversations: int = 0

    def add(self, enriched: pl.DataFrame, annotator: Enricher) -> None:
        self.llm_totals.update(_numeric_stats(annotator))
        if (stats := getattr(annotator, "stats", None)) is not None:
            self.redacted.update(getattr(stats, "pii_redacted", {}))
            self.redacted_conversations += getattr(stats, "pii_redacted_conversations", 0)
        self.unknown_refs += int((enriched["unknown_reference_ids"] > 0).sum())
        chunk_errors = enriched["enrichment"].struct.field("error")
        self.errors += int(chunk_errors.is_not_null().sum())
        self.changes.append(
            enriched.select(
                "record_index",
                pl.lit("enriched").alias("status"),
                chunk_errors.alias("last_error"),
                pl.lit(datetime.now(UTC)).alias("enriched_at"),
            ).join(self.in_progress.select("record_index"), on="record_index", how="semi")
        )
        if self.first is None:
            self.first = enriched


def _write_enriched(
    lake: LakeResource,
    source: Path,
    target: Path,
    annotator: Enricher,
    tally: _EnrichmentTally,
    keep: pl.DataFrame | None,
    better_of: pl.DataFrame | None,
) -> None:
    """Annotate and enrich the validated layer chunk by chunk into `target`; `keep`: the
    annotations not asked again; `better_of`: the previous ones a low-confidence re-ask
    compares with (`best_annotations`)."""
    # The low-confidence rule is for LLM answers: the deterministic heuristic logs none.
    log_attempts = annotator.name != "heuristic"

    def annotate(chunk: pl.DataFrame) -> pl.DataFrame:
        annotations = annotate_chunk(chunk, annotator, keep)
        made = annotations.join(tally.scope, on="conversation_id", how="semi")
        if log_attempts:  # only what the attempt log keeps: memory stays small
            tally.attempts.append(made.select(list(ATTEMPT_COLUMNS)))
        return annotations if better_of is None else best_annotations(annotations, better_of)

    con = duckdb.connect()
    try:
        load_reference(con, lake.lake.app_db_url)
        # The SQL defines the layer's columns: its result over an empty chunk is the schema.
        empty = empty_frame(source)
        schema = enrich_chunk(con, empty, annotate_chunk(empty, annotator)).to_arrow().schema
        with write_layer(target, schema, row_group_rows=lake.chunk_rows) as out:
            annotated = map_ordered_threads(
                annotate,
                read_chunks(source, lake.enrich_chunk_rows),
                concurrent_chunks(annotator),
            )
            for chunk, annotations in annotated:
                enriched = enrich_chunk(con, chunk, annotations)
                out.write(enriched)
                fault_point("enriched")
                tally.add(enriched, annotator)
                tally.progress(
                    f"enriched {out.rows}/{tally.in_progress.height} conversations "
                    f"({annotator.name})"
                )
    finally:
        con.close()


def _pii_metadata(annotator: Enricher, pii_mode: str, tally: _EnrichmentTally) -> dict[str, object]:
    """Only an enricher that sends text redacts it (the heuristic one sends nothing)."""
    sends = hasattr(annotator, "pii_mode")
    pii_metadata: dict[str, object] = {"pii_mode": pii_mode if sends else "nothing sent"}
    if sends and pii_mode != "off":
        pii_metadata["pii_redacted"] = MetadataValue.json(
            {kind: tally.redacted.get(kind, 0) for kind in PII_KINDS}
        )
        pii_metadata["pii_redacted_conversations"] = tally.redacted_conversations
    return pii_metadata


def _enriched_result(
    store: Lake, batch: str, metadata: dict[str, object], tally: _EnrichmentTally
) -> MaterializeResult:
    """The layer's materialization: `metadata`, its path and preview; its checks."""
    source = store.layer_path("validated", batch)
    target = store.layer_path("enriched", batch)
    validated, enriched_rows = row_count(source), row_count(target)
    return MaterializeResult(
        metadata={
            **metadata,
            "path": path_value(target),
            "preview": preview(
                tally.first if tally.first is not None else pl.DataFrame(),
                ["record_index", "conversation_id", "stats", "enrichment"],
            ),
        },
        check_results=[
            rows_conserved(
                "validated_rows_conserved", ("validated", validated), ("enriched", enriched_rows)
            ),
            AssetCheckResult(
                check_name="reference_ids_known",
                passed=tally.unknown_refs == 0,
                severity=AssetCheckSeverity.WARN,
                metadata={"conversations_with_unknown_reference_ids": tally.unknown_refs},
            ),
            *run_gate(store, "enriched_conversations", target, batch),
        ],
    )
