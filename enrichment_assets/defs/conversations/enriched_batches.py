"""The enriched layer in the submit-and-return Batch API mode (`ENRICH_LLM_MODE=batch`).

A run of `enriched_conversations` first moves its partition's batches one step
(`enrichers/batch_submission.py`). While a batch is out, the run records an observation
of the asset (batch ids, requests, estimate: the UI shows it on the partition) instead of
materializing it, so the normalized layer and the exports wait; the conversations stay
`enrichment_in_progress`. Once every batch has ended, the run that the `llm_batches`
sensor requests (or `enrich run` again) applies the results through the ordinary
chunked path, and the record is removed when the layer is written.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from dagster import AssetExecutionContext, AssetKey, AssetObservation, MetadataValue

from enrichment_assets.defs.conversations.layer_io import read_chunks
from enrichment_assets.enrichers.batch_ledger import PartitionBatches
from enrichment_assets.enrichers.pricing import CostEstimate

if TYPE_CHECKING:
    from enrichment_assets.enrichers.batch_submission import BatchProgress
    from enrichment_assets.enrichers.openai import OpenAIEnricher

# The OpenAI client (its Batch API) is imported by the functions that use it: the code
# location loads this module with every run, heuristic ones included (`load_from_defs_folder`).

ENRICHED = AssetKey("enriched_conversations")
# The submitting run's tags that its apply run carries on (the failed-partitions retry count).
CARRIED_TAGS = ("enrich/trigger", "enrich/retry_attempt")


def _frames(source: Path, chunk_rows: int, only: list[str] | None) -> Iterator[pl.DataFrame]:
    """The conversations the run would annotate, chunk by chunk (as `annotate_chunk`)."""
    for chunk in read_chunks(source, chunk_rows):
        chunk = chunk.unique("conversation_id", keep="first", maintain_order=True)
        yield chunk if only is None else chunk.filter(pl.col("conversation_id").is_in(only))


def advance_llm_batches(
    context: AssetExecutionContext,
    annotator: OpenAIEnricher,
    *,
    data_dir: Path,
    source: Path,
    chunk_rows: int,
    only: list[str] | None,
    scope: dict,
    estimate: CostEstimate | None,
    check_budget: Callable[[], object],
) -> BatchProgress:
    """Submit, poll or collect the partition's batches; when they ended, the enricher
    applies their results instead of sending (`OpenAIEnricher.apply_batch_outcomes`)."""
    partition = context.partition_key
    tags = context.run.tags

    def new_record() -> PartitionBatches:
        return PartitionBatches(
            partition=partition,
            submission=uuid.uuid4().hex,
            submitted_at=datetime.now(UTC).timestamp(),
            run_id=context.run.run_id,
            estimate_usd=estimate.cost_usd if estimate is not None else None,
            scope=scope,
            tags={name: tags[name] for name in CARRIED_TAGS if name in tags},
        )

    from enrichment_assets.enrichers.batch_submission import advance_batches

    progress = advance_batches(
        annotator,
        _frames(source, chunk_rows, only),
        data_dir,
        partition,
        new_record,
        lambda requests: check_budget(),
    )
    if progress.ended and progress.record is not None:
        annotator.apply_batch_outcomes(progress.outcomes)
        failed = sum(outcome.error is not None for outcome in progress.outcomes.values())
        context.log.info(
            f"LLM batches {', '.join(progress.record.batch_ids)} ended: applying "
            f"{len(progress.outcomes)} result(s), {failed} failed"
        )
    elif progress.submitted:
        context.log.info(
            f"submitted {progress.submitted} request(s) as LLM batch(es) "
            f"{', '.join(progress.record.batch_ids)}; the llm_batches sensor applies the "
            "results when they end (or run `enrich run` again)"  # type: ignore[union-attr]
        )
    elif progress.waiting:
        assert progress.record is not None
        statuses = ", ".join(f"{b.batch_id}: {b.status}" for b in progress.record.batches)
        context.log.info(f"LLM batches still running ({statuses}); nothing applied yet")
    return progress


def waiting_observation(progress: BatchProgress, partition: str) -> AssetObservation:
    """What the UI shows on the partition while its batches run."""
    from enrichment_assets.enrichers.batch import BATCH_PRICE_FACTOR

    record = progress.record
    assert record is not None
    return AssetObservation(
        asset_key=ENRICHED,
        partition=partition,
        metadata={
            "llm_batch_state": "submitted" if progress.submitted else "waiting",
            "llm_batch_ids": MetadataValue.json(record.batch_ids),
            "llm_batch_statuses": MetadataValue.json(
                {b.batch_id or f"part {b.part}": b.status for b in record.batches}
            ),
            "llm_batch_requests": record.requests,
            "llm_batch_submitted_at": MetadataValue.timestamp(record.submitted_at),
            **(
                {"llm_estimated_cost_usd": round(record.estimate_usd, 6)}
                if record.estimate_usd is not None
                else {}
            ),
            "llm_batch_price_factor": BATCH_PRICE_FACTOR,
        },
    )


def applied_metadata(progress: BatchProgress | None) -> dict[str, object]:
    """The materialization's metadata about the batches it applied."""
    if progress is None or progress.record is None:
        return {}
    from enrichment_assets.enrichers.batch import BATCH_PRICE_FACTOR

    record = progress.record
    return {
        "llm_batch_ids": MetadataValue.json(record.batch_ids),
        "llm_batch_requests": record.requests,
        "llm_batch_failed": sum(o.error is not None for o in progress.outcomes.values()),
        "llm_batch_price_factor": BATCH_PRICE_FACTOR,
    }
