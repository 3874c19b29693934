"""The `openai` enricher: AI annotations from any OpenAI-compatible endpoint.

OpenAI, Azure, vLLM, Ollama, llama.cpp server: anything that speaks
`/v1/chat/completions`. One request per distinct conversation, answered as a
strict JSON schema (`ConversationAnnotation`) and validated with pydantic; an
answer that does not validate is a failure (AI fields NULL, `error` set), never
a default.

How a chunk is annotated:
1. each conversation gets a content-hash cache key (`cache.py`); hits come from
   the cache with zero new tokens, and duplicates within the chunk are paid once;
   In the `egress` and `export` PII modes the turns are redacted first
   (`redaction.redact_messages`: typed placeholders, consistent within a conversation), so
   what is sent, and the cache key, are of the redacted text; the counts per kind are in
   `stats.pii_redacted`;
2. the misses go out online (async client, `concurrency` requests in flight,
   optional requests/tokens-per-minute pacing, our own retries: the client's are
   off) or through the Batch API (`batch.py`) when `mode="batch"`: polled in this
   call, unless the results of the partition's ended batches were handed over first
   (`apply_batch_outcomes`, from `batch_submission.py`), which are then used and
   nothing is sent;
3. each successful annotation goes into the cache as soon as it arrives, failures
   do not (they are asked again on the next run: that is how the failed-partition
   sensor heals them), so a run killed mid-chunk pays for nothing twice.

A fault costs one conversation, never the chunk: whatever goes wrong with one
request (its envelope, content, usage, transport, or a bug of ours) becomes that
conversation's NULL annotation and one-line `error`, scrubbed of the API key.
Time is bounded by a total deadline per attempt, `max_attempts` and the run's
retry budget (`retry.py`); an endpoint that fails everything trips the circuit
breaker; the HTTP client refuses redirects to other origins and caps answer
bodies (`http_client.py`).

The run's `budget` (`budget.py`) is checked before every request and charged with
every answer's cost: once spent, nothing more is sent and the rest are NULL with
`budget exhausted`. `estimate` says what a frame would cost before anything is sent
(`pricing.py`).

`stats` after `annotate` says what it cost; `on_progress(done, total)` reports
as requests complete, so the asset can log per chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import openai
import polars as pl
from pydantic import SecretStr

from enrichment_assets.enrichers import batch as batch_api
from enrichment_assets.enrichers.annotation import (
    ANNOTATION_JSON_SCHEMA,
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    AnnotationOutcome,
    EnrichmentStats,
    ModelPrice,
    SecretScrubber,
    chat_messages,
    one_line_error,
    outcome_from_completion,
    render_conversation,
    validate_annotation,
)
from enrichment_assets.enrichers.base import (
    conform_annotations,
    empty_annotations,
)
from enrichment_assets.enrichers.budget import BUDGET_EXHAUSTED, SpendBudget
from enrichment_assets.enrichers.cache import (
    AnnotationCache,
    CachedAnnotation,
    annotation_cache_key,
)
from enrichment_assets.enrichers.defaults import (
    DEFAULT_BREAKER_WINDOW,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_RETRY_BUDGET_S,
)
from enrichment_assets.enrichers.http_client import endpoint_client
from enrichment_assets.enrichers.pricing import (
    DEFAULT_EXPECTED_COMPLETION_TOKENS,
    CostEstimate,
    estimate_prompt_tokens,
)
from enrichment_assets.enrichers.retry import (
    BudgetExhausted,
    ChunkRetries,
    CircuitBreaker,
    EndpointUnavailable,
    RateLimiter,
    RequestDeadlineExceeded,
    RequestFailed,
    RetryBudget,
    RetryBudgetSpent,
    RetryPolicy,
    call_with_retries,
    rejects_json_schema,
)
from enrichment_assets.redaction import (
    DEFAULT_PHONE_REGION,
    PiiMode,
    parse_mode,
    redact_messages,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
ProgressCallback = Callable[[int, int], None]
# Conversations taken on per request slot: a conversation waiting out a retry's backoff
# holds no slot, so the others keep `concurrency` requests in flight meanwhile.
_CONVERSATIONS_PER_SLOT = 4


# -- the enricher ------------------------------------------------------------------------------
@dataclass
class _Request:
    """One distinct conversation to annotate (several rows may share it)."""

    key: str
    custom_id: str  # the first conversation_id with this content
    conversation_text: str
    estimated_tokens: int
    failed_before: bool = False  # its previous annotation failed: one attempt this run


@dataclass
class _Keyed:
    """A chunk's requests: each row's (conversation_id, cache key), one request per
    distinct key, and what redaction replaced on the way (counts per kind, conversations)."""

    row_keys: list[tuple[str, str]]
    requests: dict[str, _Request]
    redacted: dict[str, int]
    redacted_conversations: int
    fingerprint: pl.Series  # the chunk's row hashes: the same chunk, the same requests


class OpenAIEnricher:
    """Annotates conversations through an OpenAI-compatible chat endpoint."""

    name = "openai"

    def __init__(
        self,
        *,
        model: str = "gpt-4o-mini",
        base_url: str | None = None,
        api_key: SecretStr | str | None = None,
        concurrency: int = 16,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        mode: Literal["online", "batch"] = "online",
        price: ModelPrice | None = None,
        cache: AnnotationCache | None = None,
        max_prompt_chars: int = 12_000,
        max_completion_tokens: int = 600,
        temperature: float | None = 0.0,
        batch_options: batch_api.BatchOptions | None = None,
        on_progress: ProgressCallback | None = None,
        retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
        breaker_window: int = DEFAULT_BREAKER_WINDOW,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        budget: SpendBudget | None = None,
        expected_completion_tokens: int = DEFAULT_EXPECTED_COMPLETION_TOKENS,
        pii_mode: PiiMode = "egress",
        phone_region: str = DEFAULT_PHONE_REGION,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        # Redacting is the default: personal data leaves only when someone turned it off.
        self.pii_mode: PiiMode = parse_mode(pii_mode, "pii_mode")
        self.phone_region = phone_region
        self.model, self.base_url, self.mode = model, base_url, mode
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key or "")
        self._scrub = SecretScrubber(self._api_key)
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.retry = retry or RetryPolicy()
        self.max_response_bytes = max_response_bytes
        self.rpm, self.tpm = rpm, tpm
        self.price, self.cache = price, cache
        self.max_prompt_chars = max_prompt_chars
        self.max_completion_tokens = max_completion_tokens
        self.temperature = temperature
        self.batch_options = batch_options or batch_api.BatchOptions()
        self.on_progress = on_progress
        self.expected_completion_tokens = expected_completion_tokens
        self._start_run(RetryBudget(retry_budget_s), CircuitBreaker(breaker_window), budget)

    def _start_run(
        self, retry_budget: RetryBudget, breaker: CircuitBreaker, budget: SpendBudget | None
    ) -> None:
        """The state of the run (this enricher is built once per materialization): what one
        chunk spends or learns holds for the chunks after it."""
        self.retry_budget, self.breaker = retry_budget, breaker
        # The run's spend limit (`budget.py`): like the breaker, it holds across chunks.
        self.budget = budget or SpendBudget()
        # Becomes "json_object" for the rest of the run when the server rejects
        # json_schema (older vLLM and llama.cpp builds, some Azure API versions).
        self.response_format: Literal["json_schema", "json_object"] = "json_schema"
        self.stats = EnrichmentStats(model=self.model, mode=self.mode)
        # Results of the partition's ended batches (`batch_submission.py`), by cache key:
        # while set, the batch mode applies them instead of sending (each is paid once).
        self._applying: dict[str, AnnotationOutcome] | None = None
        self._applied: set[str] = set()
        # Conversations whose previous annotation failed (set by the asset): they get one
        # attempt in this run, no retries; the failed-partitions sensor asks again later.
        self.failed_before: frozenset[str] = frozenset()
        # The first chunk `estimate` keyed, kept for `annotate` (which starts with that
        # chunk): a partition of one chunk is redacted and keyed once, not twice. Only
        # one chunk is kept, so that memory does not follow the partition's size.
        self._estimated: _Keyed | None = None

    def __repr__(self) -> str:  # never the key
        return (
            f"OpenAIEnricher(model={self.model!r}, base_url={self.base_url!r}, mode={self.mode!r}, "
            f"pii_mode={self.pii_mode!r})"
        )

    def annotate(self, conversations: pl.DataFrame) -> pl.DataFrame:
        """One annotation row per conversation (ANNOTATION_SCHEMA); see the module docstring."""
        self.stats = EnrichmentStats(model=self.model, mode=self.mode)
        if conversations.height == 0:
            return empty_annotations()
        started = time.perf_counter()
        try:
            return run_coroutine(self._annotate(conversations))
        finally:
            self.stats.elapsed_s = round(time.perf_counter() - started, 3)

    def estimate(self, conversations: pl.DataFrame) -> CostEstimate:
        """What annotating `conversations` would cost (`pricing.py`); sends nothing."""
        keyed = self._keyed(conversations)
        if self._estimated is None:
            self._estimated = keyed
        requests = keyed.requests
        cached = set(self.cache.get_many(list(requests))) if self.cache is not None else set()
        return CostEstimate.of(
            model=self.model,
            conversations=conversations.height,
            prompt_tokens=[
                estimate_prompt_tokens(SYSTEM_PROMPT, r.conversation_text)
                for key, r in requests.items()
                if key not in cached
            ],
            cached=len(cached),
            expected_completion_tokens=self.expected_completion_tokens,
            price=self.price,
        )

    def batch_requests(self, conversations: pl.DataFrame) -> dict[str, tuple[str, dict[str, Any]]]:
        """What the batch mode would submit for `conversations`: cache key -> (custom_id,
        chat body) of each distinct conversation the cache does not hold."""
        requests = self._keyed(conversations).requests
        cached = set(self.cache.get_many(list(requests))) if self.cache is not None else set()
        return {
            key: (request.custom_id, self._chat_body(request))
            for key, request in requests.items()
            if key not in cached
        }

    def apply_batch_outcomes(self, outcomes: dict[str, AnnotationOutcome]) -> None:
        """Annotate from these results of ended batches (by cache key) from now on: the
        batch mode sends nothing; a conversation they lack is NULL with an error."""
        self._applying, self._applied = dict(outcomes), set()

    async def _annotate(self, conversations: pl.DataFrame) -> pl.DataFrame:
        keyed = self._keyed_once(conversations)
        self.stats.count_redactions(keyed.redacted, keyed.redacted_conversations)
        requests = keyed.requests
        for conversation_id, key in keyed.row_keys:
            requests[key].failed_before |= conversation_id in self.failed_before
        # Batch results come before the cache (they were just paid for: the cost is this
        # run's), once each; a repeat in a later chunk reads as cached.
        fresh = (set(requests) & set(self._applying or {})) - self._applied
        self._applied |= fresh
        outcomes = self._from_cache([key for key in requests if key not in fresh])
        misses = [request for key, request in requests.items() if key not in outcomes]
        if misses:
            outcomes.update(await self._request_all(misses))
        return self._rows(keyed.row_keys, outcomes)

    def _keyed_once(self, conversations: pl.DataFrame) -> _Keyed:
        """The chunk's requests: those `estimate` made of this very chunk, when it did."""
        estimated, self._estimated = self._estimated, None
        if estimated is not None:
            fingerprint = _fingerprint(conversations)
            if fingerprint.equals(estimated.fingerprint):
                return estimated
        return self._keyed(conversations)

    def _keyed(self, conversations: pl.DataFrame) -> _Keyed:
        """Each row's (conversation_id, cache key), and one request per distinct key."""
        fingerprint = _fingerprint(conversations)
        redacted: dict[str, int] = {}
        redacted_conversations = 0
        if self.pii_mode != "off":
            # Before anything is keyed or sent: the requests (and their cache keys) are of the
            # redacted text only. One Polars scan of the chunk's messages finds the candidates;
            # the exact detectors see those only (placeholders numbered per conversation).
            redaction = redact_messages(
                conversations.select("conversation_id", "messages"),
                phone_region=self.phone_region,
            )
            conversations = redaction.frame
            redacted, redacted_conversations = dict(redaction.counts), redaction.conversations
        row_keys: list[tuple[str, str]] = []
        requests: dict[str, _Request] = {}
        for conversation_id, messages in zip(
            conversations.get_column("conversation_id").to_list(),
            conversations.get_column("messages").to_list(),
            strict=True,
        ):
            turns = [(m["role"], m["content"]) for m in messages or []]
            key = annotation_cache_key(
                model=self.model,
                prompt_version=PROMPT_VERSION,
                schema=ANNOTATION_JSON_SCHEMA,
                turns=turns,
                render_options={"max_chars": self.max_prompt_chars},
            )
            row_keys.append((conversation_id, key))
            if key not in requests:
                text = render_conversation(turns, self.max_prompt_chars)
                estimate = (len(text) + len(SYSTEM_PROMPT)) // 4 + self.max_completion_tokens
                requests[key] = _Request(key, conversation_id, text, estimate)
        return _Keyed(row_keys, requests, redacted, redacted_conversations, fingerprint)

    def _from_cache(self, keys: list[str]) -> dict[str, AnnotationOutcome]:
        if self.cache is None:
            return {}
        outcomes = {}
        for key, entry in self.cache.get_many(keys).items():
            if (annotation := validate_annotation(entry.annotation)) is not None:
                outcomes[key] = AnnotationOutcome(
                    annotation=annotation,
                    prompt_tokens=entry.prompt_tokens,
                    completion_tokens=entry.completion_tokens,
                    cached=True,
                )
        return outcomes

    def _cached(self, key: str, outcome: AnnotationOutcome) -> CachedAnnotation | None:
        if outcome.annotation is None:  # failures are never cached
            return None
        return CachedAnnotation(
            key=key,
            model=self.model,
            prompt_version=PROMPT_VERSION,
            annotation=outcome.annotation.model_dump(),
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
        )

    def _store(self, outcomes: dict[str, AnnotationOutcome]) -> None:
        """Put the successful annotations of `outcomes` into the cache."""
        if self.cache is not None:
            rows = (self._cached(key, outcome) for key, outcome in outcomes.items())
            self.cache.put_many(row for row in rows if row is not None)

    @contextmanager
    def _store_as_they_arrive(self) -> Iterator[Callable[[str, AnnotationOutcome], None]]:
        """`store(key, outcome)`: cache one answer now, so that a crash later in the chunk
        cannot make the next run pay for it again. A cache that cannot be written costs
        the cache only: the annotation still goes into this run's output."""
        if self.cache is None:
            yield lambda key, outcome: None
            return
        with self.cache.writer() as writer:

            def store(key: str, outcome: AnnotationOutcome) -> None:
                if (row := self._cached(key, outcome)) is None:
                    return
                try:
                    writer.put(row)
                except Exception as exc:  # the cache is a saving, never a reason to fail
                    log.warning("enrichment cache not written (%s): %s", type(exc).__name__, exc)

            yield store

    def client(self) -> openai.AsyncOpenAI:
        """An async client of the endpoint (use it as an async context manager)."""
        return self._client()

    async def call(self, op: Callable[[], Awaitable[T]]) -> T:
        """`op()` with the enricher's retries, counted as a request (Batch API calls)."""

        async def counted() -> T:
            self.stats.requests += 1
            return await op()

        return await call_with_retries(counted, policy=self.retry, stats=self.stats)

    def one_line(self, error: str) -> str:
        """`error` as one line, scrubbed of the API key."""
        return self._one_line(error)

    def _client(self) -> openai.AsyncOpenAI:
        return endpoint_client(
            base_url=self.base_url,
            api_key=self._api_key.get_secret_value() or "EMPTY",  # local servers want none
            timeout_s=self.timeout_s,
            max_body_bytes=self.max_response_bytes,
        )

    def _chat_body(self, request: _Request) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": chat_messages(request.conversation_text, self.response_format),
            "max_tokens": self.max_completion_tokens,
            "response_format": {"type": "json_object"},
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.response_format == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "conversation_annotation",
                    "strict": True,
                    "schema": ANNOTATION_JSON_SCHEMA,
                },
            }
        return body

    async def _request_all(self, requests: list[_Request]) -> dict[str, AnnotationOutcome]:
        progress = _Progress(len(requests), self.on_progress)
        if self.breaker.is_open:  # an earlier chunk of this run found the endpoint gone
            self.stats.unavailable += len(requests)
            progress.advance(len(requests))
            error = self._one_line(self.breaker.unavailable_error())
            return {request.key: AnnotationOutcome(error=error) for request in requests}
        async with self._client() as client:
            if self.mode == "batch":
                outcomes = await self._request_batch(client, requests)
                self._store(outcomes)
                progress.advance(len(requests))
            else:
                outcomes = await self._request_online(client, requests, progress)
        for outcome in outcomes.values():
            self.stats.prompt_tokens += outcome.prompt_tokens or 0
            self.stats.completion_tokens += outcome.completion_tokens or 0
            self.stats.provider_cached_tokens += outcome.provider_cached_tokens or 0
            self.stats.budget_exhausted += outcome.error == BUDGET_EXHAUSTED
        failures = [outcome.error for outcome in outcomes.values() if outcome.error]
        if failures:
            log.warning(
                "%d of %d annotation requests failed; first error: %s",
                len(failures),
                len(requests),
                failures[0],
            )
        return outcomes

    async def _request_online(
        self, client: openai.AsyncOpenAI, requests: list[_Request], progress: _Progress
    ) -> dict[str, AnnotationOutcome]:
        limiter = RateLimiter(rpm=self.rpm, tpm=self.tpm)
        slots = asyncio.Semaphore(self.concurrency)
        retries = self.retry_budget.chunk(len(requests), self.breaker)
        pending: Iterator[_Request] = iter(requests)
        outcomes: dict[str, AnnotationOutcome] = {}

        # A fixed pool of workers pulling from one iterator: memory stays flat
        # however many conversations the chunk holds.
        async def worker(store: Callable[[str, AnnotationOutcome], None]) -> None:
            for request in pending:
                if self.budget.exhausted:  # what is left is not sent (`budget.py`)
                    outcomes[request.key] = AnnotationOutcome(error=BUDGET_EXHAUSTED)
                    progress.advance()
                    continue
                outcome = await self._annotate_one(client, request, limiter, slots, retries)
                self.budget.charge(self._cost(outcome))
                outcomes[request.key] = outcome
                store(request.key, outcome)
                ok = outcome.annotation is not None
                if outcome.error == BUDGET_EXHAUSTED:  # not the endpoint's fault
                    pass
                elif (ok or not retries.in_tail) and self.breaker.record(ok, outcome.error):
                    log.warning("%s", self.breaker.unavailable_error())
                    retries.changed()  # wake the conversations waiting to retry
                progress.advance()

        workers = min(self.concurrency * _CONVERSATIONS_PER_SLOT, len(requests))
        with self._store_as_they_arrive() as store:
            try:
                await asyncio.gather(*(worker(store) for _ in range(workers)))
            finally:
                retries.finish()
        return outcomes

    async def _annotate_one(
        self,
        client: openai.AsyncOpenAI,
        request: _Request,
        limiter: RateLimiter,
        slots: asyncio.Semaphore,
        retries: ChunkRetries,
    ) -> AnnotationOutcome:
        """One conversation's outcome; never raises (a fault costs this conversation only)."""
        first_done = False

        def first_attempt_done() -> None:
            nonlocal first_done
            if not first_done:
                first_done = True
                retries.first_attempt_done()

        try:
            answer = await call_with_retries(
                self._sender(client, request, limiter, slots, retries),
                policy=self._policy(request),
                stats=self.stats,
                retries=retries,
                on_first_attempt_done=first_attempt_done,
            )
            outcome = outcome_from_completion(answer)
        except RequestFailed as exc:
            if isinstance(exc, EndpointUnavailable):
                self.stats.unavailable += 1
            elif isinstance(exc, RetryBudgetSpent):
                self.stats.retry_budget_exhausted += 1
            outcome = AnnotationOutcome(error=str(exc))
        except Exception as exc:  # a bug of ours must cost this conversation only, too
            self._log_unexpected(f"annotating {request.custom_id}", exc)
            outcome = AnnotationOutcome(error=f"unexpected {type(exc).__name__}: {exc}")
        finally:
            first_attempt_done()
        if outcome.error is not None:
            outcome.error = self._one_line(outcome.error)
        return outcome

    def _sender(
        self,
        client: openai.AsyncOpenAI,
        request: _Request,
        limiter: RateLimiter,
        slots: asyncio.Semaphore,
        retries: ChunkRetries,
    ) -> Callable[[], Awaitable[bytes]]:
        """What `call_with_retries` calls for one attempt: send the request once it holds a
        slot and the rate allows; when the server rejects `json_schema`, once more as
        `json_object` (and the rest of the run uses that)."""
        sent_format = self.response_format

        async def attempt() -> bytes:
            nonlocal sent_format
            async with slots:
                retries.check()  # the breaker may have opened while this one queued
                if self.budget.exhausted:  # reached while this one queued or waited to retry
                    raise BudgetExhausted()
                await limiter.acquire(request.estimated_tokens)
                # Built now, not before the wait: the response format may have changed.
                sent_format = self.response_format
                body = self._chat_body(request)
                self.stats.requests += 1
                try:
                    async with asyncio.timeout(self.timeout_s):  # connect + reads + whole body
                        return await _post_chat(client, body)
                except TimeoutError:
                    raise RequestDeadlineExceeded(
                        f"no complete answer within the {self.timeout_s:g}s deadline"
                    ) from None

        async def send() -> bytes:
            try:
                return await attempt()
            except openai.BadRequestError as exc:
                if sent_format != "json_schema" or not rejects_json_schema(exc):
                    raise
                if self.response_format == "json_schema":  # the first to find out says so
                    log.warning("the server rejects response_format json_schema; using json_object")
                    self.response_format = "json_object"
                return await attempt()

        return send

    def _policy(self, request: _Request) -> RetryPolicy:
        """The retry policy of one request: a conversation that failed in its previous run
        gets a single attempt (it keeps failing: waiting on its retries would hold this
        run, and the failed-partitions sensor comes back to it on its backoff)."""
        if request.failed_before:
            return replace(self.retry, max_attempts=1)
        return self.retry

    def _one_line(self, error: str) -> str:
        return one_line_error(error, self._scrub)

    def _cost(self, outcome: AnnotationOutcome) -> float:
        """What one answer cost, as the provider prices it (0 when the price is unknown)."""
        if self.price is None:
            return 0.0
        factor = batch_api.BATCH_PRICE_FACTOR if self.mode == "batch" else 1.0
        return factor * self.price.cost(
            outcome.prompt_tokens or 0,
            outcome.completion_tokens or 0,
            outcome.provider_cached_tokens or 0,
        )

    def _log_unexpected(self, doing: str, exc: BaseException) -> None:
        """Log a failure nobody anticipated with its traceback (for us), scrubbed of the key."""
        trace = "".join(traceback.format_exception(exc))
        log.warning("unexpected failure %s: %s", doing, self._scrub(trace))

    def _applied_outcomes(self, requests: list[_Request]) -> dict[str, AnnotationOutcome]:
        """The ended batches' result of each request (already paid: no budget stops it)."""
        applying, outcomes = self._applying or {}, {}
        for request in requests:
            outcome = applying.get(request.key) or AnnotationOutcome(
                error=self._one_line(
                    "not in this partition's LLM batches: submitted by its next run"
                )
            )
            self.budget.charge(self._cost(outcome))
            outcomes[request.key] = outcome
        return outcomes

    async def _request_batch(
        self, client: openai.AsyncOpenAI, requests: list[_Request]
    ) -> dict[str, AnnotationOutcome]:
        if self._applying is not None:
            return self._applied_outcomes(requests)
        if self.budget.exhausted:
            return {request.key: AnnotationOutcome(error=BUDGET_EXHAUSTED) for request in requests}
        try:
            results = await batch_api.run_chat_batch(
                client,
                [(request.custom_id, self._chat_body(request)) for request in requests],
                options=self.batch_options,
                call=self.call,
            )
        except Exception as exc:  # one batch is one request: it fails its conversations only
            self._log_unexpected("in the batch request", exc)
            results = {
                r.custom_id: batch_api.BatchItemResult(
                    error=f"batch request failed: {type(exc).__name__}: {exc}"
                )
                for r in requests
            }
        outcomes = {}
        for request in requests:
            result = results.get(request.custom_id)
            if result is not None and result.completion is not None:
                outcome = outcome_from_completion(result.completion)
            else:
                outcome = AnnotationOutcome(error=result.error if result else "no result")
            if outcome.error is not None:
                outcome.error = self._one_line(outcome.error)
            self.budget.charge(self._cost(outcome))
            outcomes[request.key] = outcome
        return outcomes

    def _rows(
        self, row_keys: list[tuple[str, str]], outcomes: dict[str, AnnotationOutcome]
    ) -> pl.DataFrame:
        stats, seen = self.stats, set()
        stats.conversations, stats.response_format = len(row_keys), self.response_format
        rows = []
        for conversation_id, key in row_keys:
            outcome, first = outcomes[key], key not in seen
            seen.add(key)
            # A conversation repeated in the chunk was paid once: the repeat reads as cached.
            cached = outcome.cached or (not first and outcome.annotation is not None)
            charged = first and not outcome.cached
            if cached:
                stats.cache_hits += 1
                stats.cached_prompt_tokens += outcome.prompt_tokens or 0
                stats.cached_completion_tokens += outcome.completion_tokens or 0
            else:
                stats.cache_misses += 1
            stats.errors += outcome.error is not None
            rows.append(
                {
                    "conversation_id": conversation_id,
                    **(outcome.annotation.model_dump() if outcome.annotation else {}),
                    "enricher": self.name,
                    "model": self.model,
                    "prompt_version": PROMPT_VERSION,
                    "error": outcome.error,
                    "prompt_tokens": outcome.prompt_tokens if charged else 0,
                    "completion_tokens": outcome.completion_tokens if charged else 0,
                    "cached": cached,
                }
            )
        if self.price is not None:
            factor = batch_api.BATCH_PRICE_FACTOR if self.mode == "batch" else 1.0
            spent = self.price.cost(
                stats.prompt_tokens, stats.completion_tokens, stats.provider_cached_tokens
            )
            stats.cost_usd = spent * factor
            saved = self.price.cost(stats.cached_prompt_tokens, stats.cached_completion_tokens)
            stats.saved_cost_usd = saved * factor
        return conform_annotations(pl.DataFrame(rows, infer_schema_length=None))


def _fingerprint(conversations: pl.DataFrame) -> pl.Series:
    return conversations.select("conversation_id", "messages").hash_rows(seed=0)


async def _post_chat(client: openai.AsyncOpenAI, body: dict[str, Any]) -> bytes:
    """POST the chat body as is; the answer's bytes (`outcome_from_completion` reads them).

    The SDK's typed `chat.completions.create` costs ~2 ms of CPU per request
    (walking the TypedDict params, building pydantic response objects), which
    caps one event loop near 100 requests/s; the plain POST keeps the SDK's
    auth, timeouts and status-error mapping without that.
    """
    return await client.post("/chat/completions", cast_to=bytes, body=body)


class _Progress:
    """Calls `on_progress(done, total)` about every tenth of the work, and at the end."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total, self.done, self._callback = total, 0, callback
        self._step = max(1, total // 10)

    def advance(self, n: int = 1) -> None:
        before, self.done = self.done, self.done + n
        crossed = self.done // self._step > before // self._step or self.done == self.total
        if self._callback is not None and crossed:
            self._callback(self.done, self.total)


def run_coroutine(coroutine: Awaitable[T]) -> T:
    """Run `coroutine` from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()  # type: ignore[arg-type]
