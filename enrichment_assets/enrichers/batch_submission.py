"""The Batch API mode that does not hold a run: submit, record, return; later, apply.

One call, `advance_batches`, moves a partition's batches one step, whatever state they
are in (the ledger, `batch_ledger.py`, says which):
- nothing recorded and requests to send: submit them (one batch per
  `max_requests_per_batch`), record each batch, return: the run ends, the
  conversations stay `enrichment_in_progress`;
- batches recorded and some still running: poll them once each, return;
- every recorded batch ended (completed, failed, expired or cancelled): download each
  one's output and error files, put the successful answers into the enrichment cache
  (never paid twice), and return every request's outcome; a line that failed, or that a
  failed or expired batch never produced, is that conversation's error.

A record whose batch was being created when its process died is resolved first: the
batch is looked up at the server by the metadata it was created with, and submitted
again only if the server never got it.

This module knows the ledger and the Batch API calls; what an answer means (validation,
tokens, cost) stays the enricher's (`openai.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import polars as pl

from enrichment_assets.enrichers import batch as batch_api
from enrichment_assets.enrichers.annotation import (
    PROMPT_VERSION,
    AnnotationOutcome,
    outcome_from_completion,
)
from enrichment_assets.enrichers.batch_ledger import (
    PartitionBatches,
    SubmittedBatch,
    read_batches,
    remove_batches,
    write_batches,
)
from enrichment_assets.enrichers.cache import CachedAnnotation
from enrichment_assets.enrichers.openai import OpenAIEnricher, run_coroutine
from enrichment_assets.faults import fault_point

log = logging.getLogger(__name__)
# A batch found by its metadata was created after its record; allow for clock skew.
_CLOCK_SKEW_S = 600.0
Requests = dict[str, tuple[str, dict[str, Any]]]  # cache key -> (custom_id, chat body)


@dataclass
class BatchProgress:
    """Where a partition's batches are after `advance_batches`."""

    record: PartitionBatches | None  # None: nothing to send, nothing waited for
    submitted: int = 0  # requests this call submitted
    ended: bool = False  # every batch ended: `outcomes` holds their results
    outcomes: dict[str, AnnotationOutcome] = field(default_factory=dict)

    @property
    def waiting(self) -> bool:
        return self.record is not None and not self.ended


def advance_batches(
    enricher: OpenAIEnricher,
    frames: Iterable[pl.DataFrame],
    data_dir: Path,
    partition: str,
    new_record: Callable[[], PartitionBatches],
    before_submit: Callable[[int], None],
) -> BatchProgress:
    """Move the partition's batches one step (see the module docstring).

    `frames` are the conversations the run would annotate; `new_record()` starts a record
    for them; `before_submit(n)` may refuse (raise) before `n` requests are submitted.
    """
    return run_coroutine(_advance(enricher, frames, data_dir, partition, new_record, before_submit))


async def _advance(
    enricher: OpenAIEnricher,
    frames: Iterable[pl.DataFrame],
    data_dir: Path,
    partition: str,
    new_record: Callable[[], PartitionBatches],
    before_submit: Callable[[int], None],
) -> BatchProgress:
    record = read_batches(data_dir, partition)
    async with enricher.client() as client:
        if record is not None:
            record = await _resolve_unrecorded(client, enricher, record, data_dir)
        known = record.keys if record is not None else set()
        wanted: Requests = {}
        for frame in frames:
            for key, request in enricher.batch_requests(frame).items():
                if key not in known:
                    wanted.setdefault(key, request)
        if wanted:
            before_submit(len(wanted))
            record = record or new_record()
            await _submit(client, enricher, record, wanted, data_dir)
            return BatchProgress(record, submitted=len(wanted))
        if record is None:
            return BatchProgress(None, ended=True)
        batches = await _poll(client, enricher, record, data_dir)
        if not all(batch.ended for batch in record.batches):
            return BatchProgress(record)
        return BatchProgress(
            record, ended=True, outcomes=await _download(client, enricher, record, batches)
        )


async def _resolve_unrecorded(
    client: openai.AsyncOpenAI, enricher: OpenAIEnricher, record: PartitionBatches, data_dir: Path
) -> PartitionBatches | None:
    """Give each batch recorded without an id (its process died while creating it) the id
    of the batch the server holds for it; one the server never got is dropped, so that
    its requests are submitted again."""
    unrecorded = [batch for batch in record.batches if batch.batch_id is None]
    for submitted in unrecorded:
        found = await batch_api.find_batch(
            client,
            record.metadata(submitted.part),
            created_after=record.submitted_at - _CLOCK_SKEW_S,
            call=enricher.call,
        )
        if found is None:
            log.warning("batch part %d of %s never reached the server", submitted.part, record)
            record.batches.remove(submitted)
        else:
            log.info("found batch %s, created before a crash", found.id)
            submitted.batch_id, submitted.status = found.id, found.status
    if not unrecorded:
        return record
    if not record.batches:
        remove_batches(data_dir, record.partition)
        return None
    write_batches(data_dir, record)
    return record


async def _submit(
    client: openai.AsyncOpenAI,
    enricher: OpenAIEnricher,
    record: PartitionBatches,
    wanted: Requests,
    data_dir: Path,
) -> None:
    """Submit `wanted` as new batches of `record`, each recorded before and after."""
    items = list(wanted.items())
    size = enricher.batch_options.max_requests_per_batch
    for start in range(0, len(items), size):
        part = items[start : start + size]
        submitted = SubmittedBatch(
            part=max((b.part for b in record.batches), default=-1) + 1,
            model=enricher.model,
            prompt_version=PROMPT_VERSION,
            keys={custom_id: key for key, (custom_id, _) in part},
        )
        record.batches.append(submitted)
        write_batches(data_dir, record)  # before: a crash from here on is found by metadata
        batch = await batch_api.submit_batch(
            client,
            [request for _, request in part],
            call=enricher.call,
            metadata=record.metadata(submitted.part),
        )
        fault_point("llm_batch_created")
        submitted.batch_id, submitted.status = batch.id, batch.status
        write_batches(data_dir, record)


async def _poll(
    client: openai.AsyncOpenAI, enricher: OpenAIEnricher, record: PartitionBatches, data_dir: Path
) -> dict[str, Any]:
    """Each batch of `record` as the server sees it now (one GET each), by id; the
    statuses are written back to the record."""
    batches = {}
    for submitted in record.batches:
        assert submitted.batch_id is not None  # resolved by `_resolve_unrecorded`
        batch = await batch_api.retrieve_batch(client, submitted.batch_id, call=enricher.call)
        submitted.status = batch.status
        batches[batch.id] = batch
    write_batches(data_dir, record)
    return batches


async def _download(
    client: openai.AsyncOpenAI,
    enricher: OpenAIEnricher,
    record: PartitionBatches,
    batches: dict[str, Any],
) -> dict[str, AnnotationOutcome]:
    """Every request's outcome from the ended batches, by cache key; the successes are
    cached at once."""
    outcomes: dict[str, AnnotationOutcome] = {}
    cached: list[CachedAnnotation] = []
    for submitted in record.batches:
        batch = batches[submitted.batch_id]  # type: ignore[index]
        results = await batch_api.batch_results(
            client, batch, list(submitted.keys), call=enricher.call
        )
        for custom_id, result in results.items():
            key = submitted.keys[custom_id]
            if result.completion is not None:
                outcome = outcome_from_completion(result.completion)
            else:
                outcome = AnnotationOutcome(error=result.error or "no result")
            if outcome.error is not None:
                outcome.error = enricher.one_line(outcome.error)
            elif outcome.annotation is not None:
                cached.append(_cache_row(key, submitted, outcome))
            outcomes[key] = outcome
        log.info(
            "batch %s (%s): %d of %d answered",
            batch.id,
            batch.status,
            sum(results[c].completion is not None for c in results),
            len(results),
        )
    if enricher.cache is not None and cached:
        enricher.cache.put_many(cached)
    return outcomes


def _cache_row(key: str, submitted: SubmittedBatch, outcome: AnnotationOutcome) -> CachedAnnotation:
    assert outcome.annotation is not None
    return CachedAnnotation(
        key=key,
        model=submitted.model,
        prompt_version=submitted.prompt_version,
        annotation=outcome.annotation.model_dump(),
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
    )


def poll_batch_statuses(enricher: OpenAIEnricher, record: PartitionBatches) -> dict[str, str]:
    """The status of each recorded batch now, by id (for the sensor: writes nothing)."""

    async def poll() -> dict[str, str]:
        statuses = {}
        async with enricher.client() as client:
            for batch_id in record.batch_ids:
                batch = await batch_api.retrieve_batch(client, batch_id, call=enricher.call)
                statuses[batch_id] = batch.status
        return statuses

    return run_coroutine(poll())
