"""Retries and pacing of LLM requests: which failures are transient, how long the
server asks us to wait, exponential backoff with jitter, requests/tokens per minute."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import openai

from enrichment_assets.enrichers.annotation import EnrichmentStats

log = logging.getLogger(__name__)
T = TypeVar("T")


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
