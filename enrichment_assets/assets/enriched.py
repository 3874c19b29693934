"""`enriched_conversations`: reference metadata, stats and AI annotations, per conversation."""

from datetime import UTC, datetime

import duckdb
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    asset,
)

from enrichment_assets.assets.layer_io import read_chunks, row_count, write_layer
from enrichment_assets.assets.metadata import path_value, preview
from enrichment_assets.assets.validated import validated_conversations
from enrichment_assets.enrichers.base import Enricher, conform_annotations
from enrichment_assets.partitions import batch_partitions
from enrichment_assets.reference import load_reference_seeds
from enrichment_assets.resources import EnricherResource, LakeResource
from enrichment_assets.sql_files import load_sql
from enrichment_assets.status import apply_changes


def enrich_chunk(
    con: duckdb.DuckDBPyConnection, chunk: pl.DataFrame, enricher: Enricher
) -> pl.DataFrame:
    """Annotate one chunk and join it with reference data and stats (in SQL)."""
    # One annotation per id: a duplicated id (caught by the uniqueness gate) must
    # not multiply rows in the join.
    annotations = conform_annotations(
        enricher.annotate(chunk.unique("conversation_id", keep="first", maintain_order=True))
    ).unique("conversation_id", keep="first", maintain_order=True)
    con.register("conversations", chunk.to_arrow())
    con.register("annotations", annotations.to_arrow())
    try:
        return pl.from_arrow(con.sql(load_sql("enriched_conversations")).to_arrow_table())  # type: ignore[return-value]
    finally:
        con.unregister("conversations")
        con.unregister("annotations")


@asset(
    partitions_def=batch_partitions,
    group_name="conversations",
    kinds={"duckdb", "parquet"},
    deps=[validated_conversations],
    check_specs=[
        AssetCheckSpec(
            "validated_rows_conserved",
            asset="enriched_conversations",
            blocking=True,
            description="validated rows = enriched rows, for this partition.",
        ),
        AssetCheckSpec(
            "reference_ids_known",
            asset="enriched_conversations",
            blocking=False,
            description="Reference ids (persona, arc, topic, template) the reference data knows.",
        ),
    ],
)
def enriched_conversations(
    context: AssetExecutionContext, lake: LakeResource, enricher: EnricherResource
) -> MaterializeResult:
    """Validated conversations with reference metadata, stats and AI annotations.

    Reference metadata (personas, emotional arcs, training topics, templates) and
    per-conversation stats (messages per role, characters, token estimate,
    duration) come from `sql/enriched_conversations.sql` in DuckDB. AI annotations
    (summary, topics, tone, sentiment, label + confidence, quality score) come
    from the configured enricher; when it fails for a conversation its AI fields
    stay NULL and `enrichment.error` says why.
    """
    store = lake.lake
    batch = context.partition_key
    source = store.layer_path("validated", batch)
    target = store.layer_path("enriched", batch)
    annotator = enricher.build()
    started = datetime.now(UTC)
    in_progress = pl.read_parquet(source, columns=["record_index"]).with_columns(
        pl.lit("enrichment_in_progress").alias("status"),
        pl.lit(started).alias("last_attempt"),
    )
    apply_changes(store, batch, in_progress, started)

    con = duckdb.connect()
    load_reference_seeds(con)
    changes: list[pl.DataFrame] = []
    first: pl.DataFrame | None = None
    unknown_refs = errors = 0
    try:
        # The SQL defines the layer's columns: its result over an empty chunk is the schema.
        schema = enrich_chunk(con, pl.read_parquet(source).clear(), annotator).to_arrow().schema
        with write_layer(target, schema) as out:
            for chunk in read_chunks(source, lake.chunk_rows):
                enriched = enrich_chunk(con, chunk, annotator)
                out.write(enriched)
                unknown_refs += int((enriched["unknown_reference_ids"] > 0).sum())
                chunk_errors = enriched["enrichment"].struct.field("error")
                errors += int(chunk_errors.is_not_null().sum())
                changes.append(
                    enriched.select(
                        "record_index",
                        pl.lit("enriched").alias("status"),
                        chunk_errors.alias("last_error"),
                        pl.lit(datetime.now(UTC)).alias("enriched_at"),
                    )
                )
                if first is None:
                    first = enriched
                context.log.info(
                    f"enriched {out.rows}/{in_progress.height} conversations ({annotator.name})"
                )
    finally:
        con.close()
    if changes:
        apply_changes(store, batch, pl.concat(changes), datetime.now(UTC))

    validated, enriched_rows = row_count(source), row_count(target)
    return MaterializeResult(
        metadata={
            "rows": enriched_rows,
            "enricher": annotator.name,
            "annotation_errors": errors,
            "unknown_reference_ids": unknown_refs,
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
        ],
    )
