"""`enriched_conversations`: reference metadata, stats and AI annotations, per conversation."""

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    asset,
)
from pydantic import Field

from enrichment_assets.app_db import app_db_url
from enrichment_assets.assets.layer_io import (
    empty_frame,
    partition_writer,
    read_chunks,
    row_count,
    write_layer,
)
from enrichment_assets.assets.metadata import ProgressLog, layer_table, path_value, preview
from enrichment_assets.assets.validated import validated_conversations
from enrichment_assets.checks.gx_suites import (
    gate_specs,
    partitioned_check_spec,
    prewarm_gate,
    run_gate,
)
from enrichment_assets.enrichers.base import Enricher, concurrent_chunks, conform_annotations
from enrichment_assets.enrichers.settings import LLMResource, enricher_kinds, enricher_tags
from enrichment_assets.faults import fault_point
from enrichment_assets.partitions import batch_partitions
from enrichment_assets.reference import load_reference
from enrichment_assets.resources import LakeResource
from enrichment_assets.sql_files import load_sql
from enrichment_assets.status import apply_changes
from enrichment_assets.workers import map_ordered_threads


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


@asset(
    partitions_def=batch_partitions,
    group_name="conversations",
    # What the code location was loaded with (ENRICH_ENRICHER): `heuristic` or `openai`.
    kinds={"duckdb", "parquet", *enricher_kinds()},
    tags=enricher_tags(),
    deps=[validated_conversations],
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
) -> MaterializeResult:
    """Validated conversations with reference metadata, stats and AI annotations.

    Reference metadata (personas, emotional arcs, training topics, templates) and
    per-conversation stats (messages per role, characters, token estimate,
    duration) come from `sql/enriched_conversations.sql` in DuckDB. AI annotations
    (summary, topics, tone, sentiment, label + confidence, quality score) come
    from the configured enricher; when it fails for a conversation its AI fields
    stay NULL and `enrichment.error` says why.

    Run config `conversation_ids` re-enriches only those conversations (the rest
    keep their previous annotations); `force` bypasses the enrichment cache.
    """
    with partition_writer(lake.lake, context.partition_key, context.run.run_id, context.log.info):
        return _enriched_conversations(context, config, lake, enricher)


def _enriched_conversations(
    context: AssetExecutionContext,
    config: EnrichmentScope,
    lake: LakeResource,
    enricher: LLMResource,
) -> MaterializeResult:
    store = lake.lake
    prewarm_gate(store)
    progress = ProgressLog(context.log)
    batch = context.partition_key
    source = store.layer_path("validated", batch)
    target = store.layer_path("enriched", batch)
    # The enrichment cache is shared by every partition and process (SQLite, WAL).
    cache_dir = None if config.force else store.data_dir / "cache" / "enrichment"
    annotator = enricher.build_enricher(cache_dir)
    if hasattr(annotator, "on_progress"):
        annotator.on_progress = lambda done, total: context.log.debug(
            f"{annotator.name}: {done}/{total} conversations of this chunk annotated"
        )
    llm_totals: Counter[str] = Counter()
    started = datetime.now(UTC)
    keep: pl.DataFrame | None = None
    scope = pl.read_parquet(source, columns=["record_index", "conversation_id"])
    if config.conversation_ids:
        keep = previous_annotations(target)
        if keep is not None:
            keep = keep.filter(~pl.col("conversation_id").is_in(config.conversation_ids))
            scope = scope.filter(pl.col("conversation_id").is_in(config.conversation_ids))
        context.log.info(f"scope: {scope.height} of the partition's conversations re-enriched")
    in_progress = scope.select("record_index").with_columns(
        pl.lit("enrichment_in_progress").alias("status"),
        pl.lit(started).alias("last_attempt"),
    )
    apply_changes(store, batch, in_progress, started)

    con = duckdb.connect()
    load_reference(con, app_db_url())
    changes: list[pl.DataFrame] = []
    first: pl.DataFrame | None = None
    unknown_refs = errors = 0
    try:
        # The SQL defines the layer's columns: its result over an empty chunk is the schema.
        empty = empty_frame(source)
        schema = enrich_chunk(con, empty, annotate_chunk(empty, annotator)).to_arrow().schema
        with write_layer(target, schema, row_group_rows=lake.chunk_rows) as out:
            annotated = map_ordered_threads(
                lambda chunk: annotate_chunk(chunk, annotator, keep),
                read_chunks(source, lake.enrich_chunk_rows),
                concurrent_chunks(annotator),
            )
            for chunk, annotations in annotated:
                enriched = enrich_chunk(con, chunk, annotations)
                llm_totals.update(_numeric_stats(annotator))
                out.write(enriched)
                fault_point("enriched")
                unknown_refs += int((enriched["unknown_reference_ids"] > 0).sum())
                chunk_errors = enriched["enrichment"].struct.field("error")
                errors += int(chunk_errors.is_not_null().sum())
                changes.append(
                    enriched.select(
                        "record_index",
                        pl.lit("enriched").alias("status"),
                        chunk_errors.alias("last_error"),
                        pl.lit(datetime.now(UTC)).alias("enriched_at"),
                    ).join(in_progress.select("record_index"), on="record_index", how="semi")
                )
                if first is None:
                    first = enriched
                progress(
                    f"enriched {out.rows}/{in_progress.height} conversations ({annotator.name})"
                )
    finally:
        con.close()
    if changes:
        apply_changes(store, batch, pl.concat(changes), datetime.now(UTC))

    validated, enriched_rows = row_count(source), row_count(target)
    return MaterializeResult(
        metadata={
            **layer_table(target, enriched_rows),
            "enricher": annotator.name,
            "annotation_errors": errors,
            "unknown_reference_ids": unknown_refs,
            **{name: round(value, 6) for name, value in sorted(llm_totals.items())},
            "path": path_value(target),
            "preview": preview(
                first if first is not None else pl.DataFrame(),
                ["record_index", "conversation_id", "stats", "enrichment"],
            ),
        },
        check_results=[
            AssetCheckResult(
                check_name="validated_rows_conserved",
                passed=validated == enriched_rows,
                severity=AssetCheckSeverity.ERROR,
                metadata={"validated": validated, "enriched": enriched_rows},
            ),
            AssetCheckResult(
                check_name="reference_ids_known",
                passed=unknown_refs == 0,
                severity=AssetCheckSeverity.WARN,
                metadata={"conversations_with_unknown_reference_ids": unknown_refs},
            ),
            *run_gate(store, "enriched_conversations", target, batch),
        ],
    )
