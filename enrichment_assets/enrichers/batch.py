"""OpenAI Batch API mode: the same chat requests, sent as one file, answered within 24 h.

For large backfills the Batch API halves the price and has its own, much larger
rate limits. The flow: write the requests as JSONL (`custom_id` = the
conversation id), upload it (`purpose="batch"`), create the batch, poll it with
a growing interval, download the output and error files, and map every line
back by `custom_id`. Whatever does not come back (failed lines, lines missing
from both files, a batch that failed or expired) is reported as an error for
its conversation, which the enricher turns into a NULL + error row.

The steps are separate calls (`submit_batch`, `retrieve_batch`, `find_batch`,
`batch_results`) so that a run need not wait: in the submit-and-return mode
(`batch_submission.py`) one run submits and another, requested by the `llm_batches`
sensor once the batch ended, downloads; `run_chat_batch` chains them inside one run
(`ENRICH_LLM_MODE=batch_wait`).

This module knows the Batch API protocol only; what a completion means (schema
validation, tokens, cache) is the enricher's business (`openai.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import openai
import orjson

from enrichment_assets.enrichers.batch_ledger import ENDED_STATUSES

log = logging.getLogger(__name__)
T = TypeVar("T")

ENDPOINT = "/v1/chat/completions"
BATCH_PRICE_FACTOR = 0.5  # the Batch API bills half the online price
TERMINAL = ENDED_STATUSES

# `call(op)` awaits `op()` with the enricher's retries and request accounting.
CallWithRetries = Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]


@dataclass(frozen=True)
class BatchOptions:
    """How batches are sized and polled."""

    poll_interval_s: float = 10.0
    max_poll_interval_s: float = 300.0
    poll_backoff: float = 1.5
    max_wait_s: float = 25 * 3600.0  # the 24 h window plus finalizing time
    max_requests_per_batch: int = 50_000  # the API's limit per input file


@dataclass(frozen=True)
class BatchItemResult:
    """One request's result: the chat completion body, or why there is none."""

    completion: dict[str, Any] | None = None
    error: str | None = None


def requests_jsonl(requests: Sequence[tuple[str, dict[str, Any]]]) -> bytes:
    """The batch input file: one `{custom_id, method, url, body}` line per request."""
    return b"".join(
        orjson.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body})
        + b"\n"
        for custom_id, body in requests
    )


def parse_results(data: bytes) -> dict[str, BatchItemResult]:
    """Lines of an output or error file, by `custom_id`.

    A line that cannot be read (not JSON, no `custom_id`) is skipped with a warning: its
    conversation is then missing, which the caller reports as its error. A readable line
    of an unexpected shape is that conversation's error, never the file's.
    """
    results: dict[str, BatchItemResult] = {}
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            custom_id = item["custom_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("skipping unreadable batch result line %d", number)
            continue
        if not isinstance(custom_id, str):
            log.warning("skipping batch result line %d: custom_id is not a string", number)
            continue
        results[custom_id] = _item_result(item)
    return results


def _item_result(item: dict[str, Any]) -> BatchItemResult:
    response = item.get("response")
    response = response if isinstance(response, dict) else {}
    status, body = response.get("status_code"), response.get("body")
    if error := item.get("error"):
        if isinstance(error, dict):
            return BatchItemResult(
                error=f"batch item error {error.get('code')}: {error.get('message')}"
            )
        return BatchItemResult(error=f"batch item error: {str(error)[:200]}")
    if status == 200 and isinstance(body, dict):
        return BatchItemResult(completion=body)
    message = body
    if isinstance(body, dict):
        detail = body.get("error")
        message = detail.get("message") if isinstance(detail, dict) else detail
    return BatchItemResult(error=f"batch item failed with HTTP {status}: {str(message)[:200]}")


async def run_chat_batch(
    client: openai.AsyncOpenAI,
    requests: Sequence[tuple[str, dict[str, Any]]],
    *,
    options: BatchOptions,
    call: CallWithRetries,
) -> dict[str, BatchItemResult]:
    """Run `requests` (custom_id, chat body) through the Batch API: a result for every custom_id."""
    size = options.max_requests_per_batch
    chunks = [requests[start : start + size] for start in range(0, len(requests), size)]
    results: dict[str, BatchItemResult] = {}
    for chunk_results in await asyncio.gather(
        *(_run_one_batch(client, chunk, options, call) for chunk in chunks)
    ):
        results.update(chunk_results)
    return results


async def _run_one_batch(
    client: openai.AsyncOpenAI,
    requests: Sequence[tuple[str, dict[str, Any]]],
    options: BatchOptions,
    call: CallWithRetries,
) -> dict[str, BatchItemResult]:
    custom_ids = [custom_id for custom_id, _ in requests]
    try:
        batch = await submit_batch(client, requests, call=call)
        batch = await _wait_for(client, batch, options, call)
        return await batch_results(client, batch, custom_ids, call=call)
    except openai.OpenAIError as exc:
        error = f"batch request failed: {type(exc).__name__}: {exc}"
        return {custom_id: BatchItemResult(error=error) for custom_id in custom_ids}


async def submit_batch(
    client: openai.AsyncOpenAI,
    requests: Sequence[tuple[str, dict[str, Any]]],
    *,
    call: CallWithRetries,
    metadata: dict[str, str] | None = None,
) -> Any:
    """Upload `requests` as a batch input file and create its batch; the batch object.

    `metadata` goes with the batch: what finds it again after a crash (`find_batch`)."""
    upload = requests_jsonl(requests)
    uploaded = await call(
        lambda: client.files.create(
            file=("requests.jsonl", upload, "application/jsonl"), purpose="batch"
        )
    )
    extra: dict[str, Any] = {"metadata": metadata} if metadata else {}
    batch = await call(
        lambda: client.batches.create(
            input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h", **extra
        )
    )
    log.info("batch %s created with %d requests", batch.id, len(requests))
    return batch


async def retrieve_batch(
    client: openai.AsyncOpenAI, batch_id: str, *, call: CallWithRetries
) -> Any:
    """The batch object as the server sees it now (one GET)."""
    return await call(lambda: client.batches.retrieve(batch_id))


async def find_batch(
    client: openai.AsyncOpenAI,
    metadata: dict[str, str],
    *,
    created_after: float,
    call: CallWithRetries,
) -> Any | None:
    """The batch created after `created_after` (epoch s) whose metadata holds `metadata`,
    if any: a submission that crashed between creating its batch and recording it.

    The list is newest first; it is read back to `created_after` only."""
    page = await call(lambda: client.batches.list(limit=100))
    while True:
        for batch in page.data:
            if batch.created_at < created_after:
                return None
            found = batch.metadata or {}
            if all(found.get(name) == value for name, value in metadata.items()):
                return batch
        if not page.has_next_page():
            return None
        page = await call(page.get_next_page)


async def batch_results(
    client: openai.AsyncOpenAI, batch: Any, custom_ids: Sequence[str], *, call: CallWithRetries
) -> dict[str, BatchItemResult]:
    """A result for every one of `custom_ids` from an ended batch's output and error files;
    one missing from both (a failed or expired batch, a lost line) is an error naming why."""
    found: dict[str, BatchItemResult] = {}
    for file_id in (batch.error_file_id, batch.output_file_id):  # output wins on overlap
        if file_id:
            content = await call(lambda file_id=file_id: client.files.content(file_id))
            found.update(parse_results(content.content))
    why = f"missing from the results of batch {batch.id} (status {batch.status}"
    if batch.errors and batch.errors.data:
        why += f": {batch.errors.data[0].message}"
    missing = BatchItemResult(error=why + ")")
    return {custom_id: found.get(custom_id, missing) for custom_id in custom_ids}


def is_terminal(status: str | None) -> bool:
    """True when a batch of this status will not change any more."""
    return status in TERMINAL


async def _wait_for(
    client: openai.AsyncOpenAI, batch: Any, options: BatchOptions, call: CallWithRetries
) -> Any:
    """Poll until the batch ends, waiting longer between polls; cancel it past `max_wait_s`."""
    interval, deadline = options.poll_interval_s, time.monotonic() + options.max_wait_s
    while batch.status not in TERMINAL:
        if time.monotonic() > deadline:
            log.warning(
                "batch %s still %s after %.0fs: cancelling",
                batch.id,
                batch.status,
                options.max_wait_s,
            )
            batch_id = batch.id
            try:
                return await call(lambda batch_id=batch_id: client.batches.cancel(batch_id))
            except openai.OpenAIError:
                return batch
        await asyncio.sleep(interval)
        interval = min(interval * options.poll_backoff, options.max_poll_interval_s)
        batch_id = batch.id
        batch = await call(lambda batch_id=batch_id: client.batches.retrieve(batch_id))
    log.info("batch %s ended: %s", batch.id, batch.status)
    return batch
