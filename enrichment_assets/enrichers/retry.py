"""Retries and pacing of LLM requests: which failures are transient, how long the
server asks us to wait, exponential backoff with jitter, the run's retry budget,
requests/tokens per minute.

Three bounds keep a run's time finite whatever the endpoint does:
- each attempt has a total deadline (connect, every read, the whole body: the
  enricher's `timeout_s`), `RequestDeadlineExceeded` when it passes;
- each conversation has `max_attempts`;
- the run has a retry budget (`RetryBudget`): the seconds it may spend waiting on
  retries alone. While some conversation of the chunk still waits for its first
  answer, a retry delays nothing and is free; once every conversation has had its
  first answer, what is left is conversations that keep failing, and the budget's
  clock runs. A retry that could not start before the budget runs out is not made:
  the conversation is NULL with its error, for the failed-partitions sensor to take
  later (1 min ... 4 h). What a chunk spends is gone for the chunks after it.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from enrichment_assets.enrichers.budget import BUDGET_EXHAUSTED

log = logging.getLogger(__name__)
T = TypeVar("T")


# -- retries and pacing ---------------------------------------------------------------------
class RequestFailed(openai.OpenAIError):
    """A request that failed for good: not retryable, or out of attempts."""


class RetryBudgetSpent(RequestFailed):
    """A retry the run's retry budget could not cover."""


class EndpointUnavailable(RequestFailed):
    """Not sent (or not retried): the circuit breaker is open."""


class BudgetExhausted(RequestFailed):
    """Not sent: the run's measured spend reached its budget (`budget.SpendBudget`)."""

    def __init__(self) -> None:
        super().__init__(BUDGET_EXHAUSTED)


class RequestDeadlineExceeded(openai.OpenAIError):
    """No complete answer within the request's total deadline (worth another try)."""


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
    # A longer Retry-After / reset hint fails the conversation at once: waiting 10 min
    # (six times) would hold the run; the failed-partitions sensor comes back later.
    max_server_wait_s: float = 60.0

    def delay(self, attempt: int, server_hint: float | None) -> float:
        if server_hint is not None:
            # At least what the server asked, plus a little jitter so waiters don't stampede.
            return server_hint + random.uniform(0, self.base_delay_s)
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


def is_transient(exc: BaseException) -> bool:
    """429, 408, 5xx, timeouts and connection errors are worth another try; other 4xx are not."""
    if isinstance(exc, openai.APIConnectionError | RequestDeadlineExceeded):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 429) or exc.status_code >= 500
    return False


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class RetryBudget:
    """The run's retry budget, in seconds of waiting on retries alone (module docstring)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.left_s = seconds

    def chunk(self, first_attempts: int, breaker: CircuitBreaker | None = None) -> ChunkRetries:
        """The retry bookkeeping of one chunk of `first_attempts` conversations."""
        return ChunkRetries(self, first_attempts, breaker)


class ChunkRetries:
    """One chunk's side of the retry budget and the circuit breaker, in its event loop.

    `first_attempt_done()` once per conversation; when the last one has been called,
    the budget's clock runs. `wait_to_retry` sleeps until a retry is due, unless the
    budget cannot cover it or the breaker opens meanwhile (then it raises at once).
    """

    def __init__(
        self, budget: RetryBudget, first_attempts: int, breaker: CircuitBreaker | None
    ) -> None:
        self._budget, self._breaker = budget, breaker
        self._pending_first = first_attempts
        self._tail_started: float | None = None
        self.deadline: float | None = None
        # Replaced on every change, after setting the old one: whoever waits on it wakes.
        self._changed = asyncio.Event()
        if first_attempts == 0:
            self._start_tail()

    def first_attempt_done(self) -> None:
        """One more conversation has had its first answer (or failure)."""
        self._pending_first -= 1
        if self._pending_first == 0:
            self._start_tail()

    @property
    def in_tail(self) -> bool:
        """Every conversation has had its first answer: only retries are left."""
        return self._tail_started is not None

    def _start_tail(self) -> None:
        self._tail_started = time.monotonic()
        self.deadline = self._tail_started + self._budget.left_s
        self.changed()

    def changed(self) -> None:
        """Wake the waiters to look again (the breaker opened, the tail started)."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def finish(self) -> None:
        """Charge the run's budget with what this chunk spent waiting on retries alone."""
        if self._tail_started is not None:
            spent = time.monotonic() - self._tail_started
            self._budget.left_s = max(0.0, self._budget.left_s - spent)

    def check(self) -> None:
        """Raise when no further attempt may be made (the breaker is open)."""
        if self._breaker is not None and self._breaker.is_open:
            raise EndpointUnavailable(self._breaker.unavailable_error())

    async def wait_to_retry(self, delay: float, attempts: int, last_error: str) -> None:
        """Sleep `delay` seconds before the next attempt; RetryBudgetSpent when the budget
        ends before that, EndpointUnavailable when the breaker opens meanwhile."""
        wake_at = time.monotonic() + delay
        while True:
            self.check()
            if self.deadline is not None and wake_at > self.deadline:
                raise RetryBudgetSpent(
                    f"retry budget of this run ({self._budget.seconds:g}s) spent after "
                    f"{attempts} attempt{'s' if attempts > 1 else ''}: {last_error}"
                )
            remaining = wake_at - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):  # due, or something changed: look again
                await asyncio.wait_for(self._changed.wait(), remaining)


class CircuitBreaker:
    """Opens when the last `window` conversations of the run all failed, and stays open.

    An endpoint that answers nothing useful (down, 401, quota exhausted, a proxy's
    error page, a model that never gives valid JSON) would otherwise take one doomed
    request (or six) per conversation: 100,000 of them for a big backfill. Once open,
    nothing more is sent in this run; the rest are NULL with `endpoint unavailable`
    and the failed-partitions sensor retries later. `window=0` turns it off.

    Failures count only while other conversations still wait for their first answer
    (the enricher records them so): in a chunk's tail only the conversations that keep
    failing are left, so failures there say nothing about the endpoint, and a few
    dozen poison conversations must not stop the rest of the run.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.consecutive_failures = 0
        self.is_open = False
        self.last_error: str | None = None

    def record(self, ok: bool, error: str | None = None) -> bool:
        """Count one conversation's outcome; True when this one opened the breaker."""
        if ok:
            self.consecutive_failures = 0
            return False
        self.consecutive_failures += 1
        self.last_error = error
        if self.is_open or not self.window or self.consecutive_failures < self.window:
            return False
        self.is_open = True
        return True

    def unavailable_error(self) -> str:
        """The error of every conversation not sent because the breaker is open."""
        return (
            f"endpoint unavailable: the last {self.window} conversations all failed, "
            f"so the rest of this run was not sent (last error: {self.last_error})"
        )


async def call_with_retries(
    op: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    stats: EnrichmentStats,
    retries: ChunkRetries | None = None,
    on_first_attempt_done: Callable[[], None] | None = None,
) -> T:
    """`await op()`, retrying transient failures; raises RequestFailed when it gives up.

    With `retries`, each retry must fit the run's retry budget and the breaker be closed.
    `on_first_attempt_done` is called once, as soon as the first attempt has ended
    (however it ended: before the wait for a retry, not after it).
    """
    first_done = on_first_attempt_done

    def first_attempt_ended() -> None:
        nonlocal first_done
        if first_done is not None:
            callback, first_done = first_done, None
            callback()

    try:
        for attempt in range(1, policy.max_attempts + 1):
            try:
                if retries is not None:
                    retries.check()
                return await op()
            except (openai.OpenAIError, ValueError) as exc:  # ValueError: an unreadable body
                if isinstance(exc, RequestFailed):
                    raise
                if not is_transient(exc):
                    raise RequestFailed(describe(exc)) from exc
                if attempt == policy.max_attempts:
                    raise RequestFailed(
                        f"gave up after {attempt} attempt{'s' if attempt > 1 else ''}: "
                        f"{describe(exc)}"
                    ) from exc
                response = getattr(exc, "response", None)
                hint = (
                    server_retry_hint(response.status_code, response.headers) if response else None
                )
                if hint is not None and hint > policy.max_server_wait_s:
                    raise RequestFailed(
                        f"the server asks to wait {hint:.0f}s, over the "
                        f"{policy.max_server_wait_s:.0f}s a run waits: {describe(exc)}"
                    ) from exc
                delay = policy.delay(attempt, hint)
                log.debug(
                    "attempt %d failed (%s); retrying in %.2fs", attempt, type(exc).__name__, delay
                )
                first_attempt_ended()
                if retries is None:
                    await asyncio.sleep(delay)
                else:
                    await retries.wait_to_retry(delay, attempt, describe(exc))
                stats.retries += 1
        raise AssertionError("unreachable")
    finally:
        first_attempt_ended()


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
