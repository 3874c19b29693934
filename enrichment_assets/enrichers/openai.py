"""The `openai` enricher: AI annotations from any OpenAI-compatible endpoint.

OpenAI, Azure, vLLM, Ollama, llama.cpp server: anything that speaks
`/v1/chat/completions`. One request per distinct conversation, answered as a
strict JSON schema (`ConversationAnnotation`) and validated with pydantic; an
answer that does not validate is a failure (AI fields NULL, `error` set), never
a default.

How a chunk is annotated:
1. each conversation gets a content-hash cache key (`cache.py`); hits come from
   the cache with zero new tokens, and duplicates within the chunk are paid once;
2. the misses go out online (async client, `concurrency` requests in flight,
   optional requests/tokens-per-minute pacing, our own retries: the client's are
   off) or through the Batch API (`batch.py`) when `mode="batch"`;
3. successful annotations go into the cache, failures do not (they are asked
   again on the next run: that is how the failed-partition sensor heals them).

`stats` after `annotate` says what it cost; `on_progress(done, total)` reports
as requests complete, so the asset can log per chunk.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

import openai
import orjson
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from enrichment_assets.enrichers import batch as batch_api
from enrichment_assets.enrichers.base import (
    EMOTIONAL_TONES,
    LABELS,
    conform_annotations,
    empty_annotations,
)
from enrichment_assets.enrichers.cache import (
    CachedAnnotation,
    EnrichmentCache,
    annotation_cache_key,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
ProgressCallback = Callable[[int, int], None]

# Bump when SYSTEM_PROMPT or the annotation model changes meaning: it is part of
# every cache key and of every output row.
PROMPT_VERSION = "annotate-v1"


class ConversationAnnotation(BaseModel):
    """What the model must answer for one conversation (sent as a strict JSON schema)."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(description="One to three sentences on what the user wanted and got.")
    topics: list[str] = Field(max_length=8, description="One to five short key topics.")
    emotional_tone: Literal[EMOTIONAL_TONES] = Field(description="The user's overall tone.")
    sentiment: float = Field(ge=-1.0, le=1.0, description="-1 very negative .. 1 very positive.")
    label: Literal[LABELS] = Field(description="The kind of task the conversation is.")
    confidence: float = Field(ge=0.0, le=1.0, description="Confidence in the label, 0..1.")
    quality_score: float = Field(
        ge=0.0, le=100.0, description="0..100: how good the assistant turns are as training data."
    )

    @field_validator("summary")
    @classmethod
    def _summary_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("summary is blank")
        return value.strip()


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema as OpenAI strict mode wants it: closed objects, all keys required."""

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            for child in node.values():
                close(child)
        elif isinstance(node, list):
            for child in node:
                close(child)

    schema = model.model_json_schema()
    close(schema)
    return schema


ANNOTATION_JSON_SCHEMA = strict_json_schema(ConversationAnnotation)

SYSTEM_PROMPT = f"""\
You annotate one conversation between a user and an assistant for a training-data pipeline.
Read the whole conversation, then answer with the annotation only:
- summary: one to three sentences on what the user wanted and what the assistant did;
- topics: one to five short, lowercase key topics;
- emotional_tone: the user's overall tone, one of {", ".join(EMOTIONAL_TONES)};
- sentiment: the user's sentiment from -1.0 (very negative) to 1.0 (very positive);
- label: the kind of task, one of {", ".join(LABELS)};
- confidence: your confidence in the label, from 0.0 to 1.0;
- quality_score: 0 to 100, how good the assistant's turns are as training data \
(correct, helpful, well written).
Never invent content that is not in the conversation."""

_JSON_MODE_SUFFIX = "\nAnswer with one JSON object that follows this JSON schema:\n"


def render_conversation(turns: list[tuple[str, str]], max_chars: int) -> str:
    """The conversation as compact `role: content` lines, cut in the middle past `max_chars`."""
    text = "\n".join(f"{role}: {' '.join(str(content).split())}" for role, content in turns)
    if len(text) <= max_chars:
        return text
    # Keep the opening (the request) and the end (the resolution); drop the middle.
    head = text[: max_chars * 2 // 3]
    tail = text[len(text) - (max_chars - len(head)) :]
    return f"{head}\n[... {len(text) - len(head) - len(tail)} characters omitted ...]\n{tail}"


def chat_messages(conversation_text: str, response_format: str) -> list[dict[str, str]]:
    system = SYSTEM_PROMPT
    if response_format == "json_object":  # no schema enforcement: describe it instead
        system += _JSON_MODE_SUFFIX + _compact_json(ANNOTATION_JSON_SCHEMA)
    return [{"role": "system", "content": system}, {"role": "user", "content": conversation_text}]


def _compact_json(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- outcomes, errors, accounting ---------------------------------------------------------
@dataclass
class AnnotationOutcome:
    """The result of annotating one distinct conversation: an annotation or an error."""

    annotation: ConversationAnnotation | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached: bool = False


_MAX_ERROR_CHARS = 300
_KEY_LIKE = re.compile(r"(sk-|Bearer\s+)[A-Za-z0-9_\-.]{6,}")


def one_line_error(text: str, api_key: SecretStr | None = None) -> str:
    """`text` fit for a row's `error`: one line, bounded, with no API key in it."""
    secret = api_key.get_secret_value() if api_key is not None else ""
    if secret:
        text = text.replace(secret, "***")
    text = _KEY_LIKE.sub(r"\1***", " ".join(text.split()))
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def validate_annotation(data: Mapping[str, Any]) -> ConversationAnnotation | None:
    try:
        return ConversationAnnotation.model_validate(data)
    except ValidationError:
        return None


def outcome_from_completion(completion: Mapping[str, Any]) -> AnnotationOutcome:
    """Validate a chat completion body (online answer or a line of a batch output file)."""
    choice = (completion.get("choices") or [{}])[0]
    message, usage = choice.get("message") or {}, completion.get("usage") or {}
    content, refusal = message.get("content"), message.get("refusal")
    finish_reason = choice.get("finish_reason")
    prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")

    def failed(error: str) -> AnnotationOutcome:
        return AnnotationOutcome(
            error=one_line_error(error),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    if refusal:
        return failed(f"model refused: {refusal}")
    if not content:
        return failed(f"empty response (finish_reason={finish_reason})")
    try:
        annotation = ConversationAnnotation.model_validate_json(content)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        if any(p["type"] == "json_invalid" for p in problems):
            return failed(f"response is not valid JSON (finish_reason={finish_reason})")
        described = "; ".join(
            f"{'.'.join(map(str, p['loc'])) or 'root'}={str(p.get('input'))[:40]!s}: {p['msg']}"
            for p in problems[:3]
        )
        return failed(f"response violates the annotation schema: {described}")
    return AnnotationOutcome(
        annotation=annotation, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens."""

    input_per_1m: float
    output_per_1m: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


@dataclass
class EnrichmentStats:
    """What one `annotate` call did and cost; `as_metadata()` feeds the asset's metadata."""

    model: str = ""
    mode: str = "online"
    response_format: str = "json_schema"
    conversations: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    errors: int = 0
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    prompt_tokens: int = 0  # spent by this call
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # what the cache hits had cost when first obtained
    cached_completion_tokens: int = 0
    cost_usd: float | None = None  # None: no price known for the model
    saved_cost_usd: float | None = None
    elapsed_s: float = 0.0

    def as_metadata(self) -> dict[str, float | int | str]:
        return {
            f"llm_{name}": round(value, 6) if isinstance(value, float) else value
            for name, value in asdict(self).items()
            if value is not None
        }


# -- retries and pacing ---------------------------------------------------------------------
class RequestFailed(openai.OpenAIError):
    """A request that failed for good: not retryable, or out of attempts."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | None) -> float | None:
    """Seconds in an OpenAI reset header: "1s", "6m0s", "20ms", "1h2m3.5s" or a bare number."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def server_retry_hint(status: int, headers: Mapping[str, str]) -> float | None:
    """How long the server asked us to wait, in seconds, if it said."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    if (retry_after := headers.get("retry-after")) is not None:
        if (seconds := parse_duration(retry_after)) is not None:
            return seconds
        try:
            return max(
                0.0, email.utils.parsedate_to_datetime(retry_after).timestamp() - time.time()
            )
        except (TypeError, ValueError):
            pass
    if status != 429:
        return None
    resets = [
        (headers.get(f"x-ratelimit-remaining-{kind}") == "0", reset)
        for kind in ("requests", "tokens")
        if (reset := parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))) is not None
    ]
    exhausted = [reset for is_exhausted, reset in resets if is_exhausted]
    if exhausted:
        return max(exhausted)
    return min((reset for _, reset in resets), default=None)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, unless the server says how long to wait."""

    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_server_wait_s: float = 600.0  # cap on Retry-After / reset hints

    def delay(self, attempt: int, server_hint: float | None) -> float:
        if server_hint is not None:
            # At least what the server asked, plus a little jitter so waiters don't stampede.
            return min(server_hint, self.max_server_wait_s) + random.uniform(0, self.base_delay_s)
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


def is_transient(exc: BaseException) -> bool:
    """429, 408, 5xx, timeouts and connection errors are worth another try; other 4xx are not."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 429) or exc.status_code >= 500
    return False


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def call_with_retries(
    op: Callable[[], Awaitable[T]], *, policy: RetryPolicy, stats: EnrichmentStats
) -> T:
    """`await op()`, retrying transient failures; raises RequestFailed when it gives up."""
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return await op()
        except (openai.OpenAIError, ValueError) as exc:  # ValueError: an unreadable body
            if isinstance(exc, RequestFailed):
                raise
            if not is_transient(exc):
                raise RequestFailed(describe(exc)) from exc
            if attempt == policy.max_attempts:
                raise RequestFailed(f"gave up after {attempt} attempts: {describe(exc)}") from exc
            response = getattr(exc, "response", None)
            hint = server_retry_hint(response.status_code, response.headers) if response else None
            delay = policy.delay(attempt, hint)
            stats.retries += 1
            log.debug(
                "attempt %d failed (%s); retrying in %.2fs", attempt, type(exc).__name__, delay
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


class _Pace:
    """A generic cell-rate pacer: `per_minute` units, with about a second of burst."""

    def __init__(self, per_minute: float, burst_s: float = 1.0) -> None:
        self.seconds_per_unit = 60.0 / per_minute
        self.burst_s = burst_s
        self._next_free = 0.0

    def reserve(self, units: float, now: float) -> float:
        start = max(self._next_free, now)
        self._next_free = start + units * self.seconds_per_unit
        return max(0.0, start - now - self.burst_s)


class RateLimiter:
    """Optional requests-per-minute and tokens-per-minute pacing (None: unlimited)."""

    def __init__(self, *, rpm: int | None = None, tpm: int | None = None) -> None:
        self._requests = _Pace(rpm) if rpm else None
        self._tokens = _Pace(tpm) if tpm else None

    async def acquire(self, estimated_tokens: int) -> None:
        now, wait = time.monotonic(), 0.0
        if self._requests:
            wait = self._requests.reserve(1, now)
        if self._tokens:
            wait = max(wait, self._tokens.reserve(estimated_tokens, now))
        if wait > 0:
            await asyncio.sleep(wait)


def rejects_json_schema(exc: openai.BadRequestError) -> bool:
    """A 400 that says the server does not do `response_format` json_schema."""
    text = f"{exc.message} {exc.param or ''} {exc.body or ''}".lower()
    return "response_format" in text or "json_schema" in text


# -- the enricher ------------------------------------------------------------------------------
@dataclass
class _Request:
    """One distinct conversation to annotate (several rows may share it)."""

    key: str
    custom_id: str  # the first conversation_id with this content
    conversation_text: str
    estimated_tokens: int


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
        cache: EnrichmentCache | None = None,
        max_prompt_chars: int = 12_000,
        max_completion_tokens: int = 600,
        temperature: float | None = 0.0,
        batch_options: batch_api.BatchOptions | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.model, self.base_url, self.mode = model, base_url, mode
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key or "")
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.retry = retry or RetryPolicy()
        self.rpm, self.tpm = rpm, tpm
        self.price, self.cache = price, cache
        self.max_prompt_chars = max_prompt_chars
        self.max_completion_tokens = max_completion_tokens
        self.temperature = temperature
        self.batch_options = batch_options or batch_api.BatchOptions()
        self.on_progress = on_progress
        # Becomes "json_object" for the rest of the run when the server rejects
        # json_schema (older vLLM and llama.cpp builds, some Azure API versions).
        self.response_format: Literal["json_schema", "json_object"] = "json_schema"
        self.stats = EnrichmentStats(model=model, mode=mode)

    def __repr__(self) -> str:  # never the key
        return (
            f"OpenAIEnricher(model={self.model!r}, base_url={self.base_url!r}, mode={self.mode!r})"
        )

    def annotate(self, conversations: pl.DataFrame) -> pl.DataFrame:
        """One annotation row per conversation (ANNOTATION_SCHEMA); see the module docstring."""
        self.stats = EnrichmentStats(model=self.model, mode=self.mode)
        if conversations.height == 0:
            return empty_annotations()
        started = time.perf_counter()
        try:
            return _run_coroutine(self._annotate(conversations))
        finally:
            self.stats.elapsed_s = round(time.perf_counter() - started, 3)

    async def _annotate(self, conversations: pl.DataFrame) -> pl.DataFrame:
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

        outcomes = self._from_cache(list(requests))
        misses = [request for key, request in requests.items() if key not in outcomes]
        if misses:
            fresh = await self._request_all(misses)
            self._store(fresh)
            outcomes.update(fresh)
        return self._rows(row_keys, outcomes)

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

    def _store(self, outcomes: dict[str, AnnotationOutcome]) -> None:
        if self.cache is not None:
            self.cache.put_many(
                CachedAnnotation(
                    key=key,
                    model=self.model,
                    prompt_version=PROMPT_VERSION,
                    annotation=outcome.annotation.model_dump(),
                    prompt_tokens=outcome.prompt_tokens,
                    completion_tokens=outcome.completion_tokens,
                )
                for key, outcome in outcomes.items()
                if outcome.annotation is not None
            )

    def _client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self._api_key.get_secret_value() or "EMPTY",  # local servers want none
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=0,  # retries are ours: backoff, Retry-After, accounting
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
        async with self._client() as client:
            if self.mode == "batch":
                outcomes = await self._request_batch(client, requests)
                progress.advance(len(requests))
            else:
                outcomes = await self._request_online(client, requests, progress)
        for outcome in outcomes.values():
            self.stats.prompt_tokens += outcome.prompt_tokens or 0
            self.stats.completion_tokens += outcome.completion_tokens or 0
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
        pending: Iterator[_Request] = iter(requests)
        outcomes: dict[str, AnnotationOutcome] = {}

        # A fixed pool of workers pulling from one iterator: memory stays flat
        # however many conversations the chunk holds.
        async def worker() -> None:
            for request in pending:
                outcomes[request.key] = await self._annotate_one(client, request, limiter)
                progress.advance()

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(requests)))))
        return outcomes

    async def _annotate_one(
        self, client: openai.AsyncOpenAI, request: _Request, limiter: RateLimiter
    ) -> AnnotationOutcome:
        async def send() -> Any:
            await limiter.acquire(request.estimated_tokens)
            self.stats.requests += 1
            body = self._chat_body(request)
            try:
                return await _post_chat(client, body)
            except openai.BadRequestError as exc:
                sent_schema = body["response_format"]["type"] == "json_schema"
                if not sent_schema or not rejects_json_schema(exc):
                    raise
                if self.response_format == "json_schema":  # the first to find out says so
                    log.warning("the server rejects response_format json_schema; using json_object")
                    self.response_format = "json_object"
                self.stats.requests += 1
                return await _post_chat(client, self._chat_body(request))

        try:
            completion = await call_with_retries(send, policy=self.retry, stats=self.stats)
        except RequestFailed as exc:
            return AnnotationOutcome(error=one_line_error(str(exc), self._api_key))
        return outcome_from_completion(completion)

    async def _request_batch(
        self, client: openai.AsyncOpenAI, requests: list[_Request]
    ) -> dict[str, AnnotationOutcome]:
        async def call(op: Callable[[], Awaitable[T]]) -> T:
            async def counted() -> T:
                self.stats.requests += 1
                return await op()

            return await call_with_retries(counted, policy=self.retry, stats=self.stats)

        results = await batch_api.run_chat_batch(
            client,
            [(request.custom_id, self._chat_body(request)) for request in requests],
            options=self.batch_options,
            call=call,
        )
        outcomes = {}
        for request in requests:
            result = results[request.custom_id]
            if result.completion is not None:
                outcomes[request.key] = outcome_from_completion(result.completion)
            else:
                error = one_line_error(result.error or "no result", self._api_key)
                outcomes[request.key] = AnnotationOutcome(error=error)
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
            spent = self.price.cost(stats.prompt_tokens, stats.completion_tokens)
            stats.cost_usd = spent * factor
            saved = self.price.cost(stats.cached_prompt_tokens, stats.cached_completion_tokens)
            stats.saved_cost_usd = saved * factor
        return conform_annotations(pl.DataFrame(rows, infer_schema_length=None))


async def _post_chat(client: openai.AsyncOpenAI, body: dict[str, Any]) -> dict[str, Any]:
    """POST the chat body as is and read the answer with orjson.

    The SDK's typed `chat.completions.create` costs ~2 ms of CPU per request
    (walking the TypedDict params, building pydantic response objects), which
    caps one event loop near 100 requests/s; the plain POST keeps the SDK's
    auth, timeouts and status-error mapping without that.
    """
    answer = orjson.loads(await client.post("/chat/completions", cast_to=bytes, body=body))
    if not isinstance(answer, dict):
        raise ValueError(f"the answer is a JSON {type(answer).__name__}, not an object")
    return answer


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


def _run_coroutine(coroutine: Awaitable[T]) -> T:
    """Run `coroutine` from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()  # type: ignore[arg-type]
