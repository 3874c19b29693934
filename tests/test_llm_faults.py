"""Issue 16: an LLM fault costs one conversation, never a chunk, a partition, unbounded
time or money. Each test aims one fault of the loopback server at chosen conversations
and checks the per-item outcome, the bounded wall time and that nothing is paid twice."""

# The `llm_server` fixture is imported (tests/conftest.py), so parameters named after it
# "redefine" the import.

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path

import polars as pl
import pytest

from enrichment_assets.enrichers.base import AI_FIELDS
from enrichment_assets.enrichers.batch import BatchOptions
from enrichment_assets.enrichers.cache import EnrichmentCache
from enrichment_assets.enrichers.openai import OpenAIEnricher
from enrichment_assets.enrichers.retry import RetryPolicy
from tests.llm_fixtures import conversation_id, make_conversations
from tests.llm_server import MOVED_CHAT_PATH, Faults, LoopbackLLMServer

# A key that does not look like one: no `sk-`, characters a pattern would not expect.
ODD_KEY = "Zq9/LOOPBACK+key=unlike~any.pattern"
FAST_RETRIES = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)
BOUND_S = 60.0  # "bounded": the faults below would otherwise hold a run for minutes or forever
MARKER = "FAULT-MARKER-Q7"
FAULTY = 5  # the conversation the fault is aimed at


def enricher_for(server: LoopbackLLMServer, **options: object) -> OpenAIEnricher:
    options.setdefault("retry", FAST_RETRIES)
    options.setdefault("api_key", ODD_KEY)
    options.setdefault("concurrency", 8)
    return OpenAIEnricher(base_url=server.base_url, **options)  # type: ignore[arg-type]


def run_with_fault(
    server: LoopbackLLMServer, kind: str, tmp_path: Path, count: int = 12, **options: object
) -> tuple[pl.DataFrame, OpenAIEnricher, float]:
    """Annotate `count` conversations, conversation FAULTY carrying the fault `kind`."""
    server.configure(Faults(targeted={MARKER: kind}, **options.pop("faults", {})))  # type: ignore[arg-type]
    enricher = enricher_for(server, cache=EnrichmentCache(tmp_path / "cache"), **options)
    started = time.monotonic()
    annotations = enricher.annotate(make_conversations(count, marked={FAULTY: MARKER}))
    return annotations, enricher, time.monotonic() - started


def split(annotations: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    faulty = annotations.filter(pl.col("conversation_id") == conversation_id(FAULTY))
    good = annotations.filter(pl.col("conversation_id") != conversation_id(FAULTY))
    return good, faulty


def assert_only_the_faulty_one_failed(annotations: pl.DataFrame, error_part: str) -> str:
    good, faulty = split(annotations)
    assert good["error"].null_count() == good.height, good["error"].drop_nulls().to_list()
    for name in AI_FIELDS:
        assert good[name].null_count() == 0, name
    assert faulty.height == 1
    error = faulty["error"][0]
    assert error is not None and error_part in error, error
    for name in AI_FIELDS:
        assert faulty[name][0] is None, name
    return error


def assert_nothing_paid_twice(server: LoopbackLLMServer) -> None:
    assert server.counters.paid_twice() == []


def assert_rerun_asks_only_for_the_faulty_one(
    server: LoopbackLLMServer, tmp_path: Path, count: int = 12
) -> None:
    """A new run over the same input, fault gone: the good answers come from the cache."""
    server.configure(Faults())
    again = enricher_for(server, cache=EnrichmentCache(tmp_path / "cache"))
    annotations = again.annotate(make_conversations(count, marked={FAULTY: MARKER}))
    assert annotations["error"].null_count() == count
    assert server.counters.chat_requests == 1


# -- 1. per-item isolation ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "error_part"),
    [
        ("choices_null", "malformed answer"),
        ("choices_string", "malformed answer"),
        ("choices_empty", "malformed answer"),
        ("message_string", "malformed answer"),
        ("usage_list", "malformed answer"),
        ("usage_negative", "malformed answer"),
        ("usage_huge", "malformed answer"),
        ("body_list", "malformed answer"),
        ("body_not_json", "not valid JSON"),
        ("content_number", "malformed answer"),
    ],
)
def test_a_malformed_envelope_costs_only_its_conversation(
    llm_server: LoopbackLLMServer, tmp_path: Path, kind: str, error_part: str
) -> None:
    annotations, enricher, elapsed = run_with_fault(llm_server, kind, tmp_path)

    assert annotations.height == 12
    assert_only_the_faulty_one_failed(annotations, error_part)
    assert elapsed < BOUND_S
    # An answer that came back is not asked for again in the run: one request, paid once.
    assert llm_server.counters.chat_requests == 12
    assert_nothing_paid_twice(llm_server)
    assert len(EnrichmentCache(tmp_path / "cache")) == 11
    assert enricher.stats.errors == 1
    assert_rerun_asks_only_for_the_faulty_one(llm_server, tmp_path)


@pytest.mark.parametrize(
    ("kind", "error_part"),
    [
        ("confidence_true", "confidence"),
        ("confidence_string", "confidence"),
        ("sentiment_out_of_range", "sentiment"),
        ("quality_out_of_range", "quality_score"),
        ("label_unknown", "label"),
        ("tone_unknown", "emotional_tone"),
        ("topic_not_string", "topics"),
        ("extra_field", "debug"),
        ("content_not_json", "not valid JSON"),
        ("summary_long", "summary is 100,000 characters, over the 2,000-character cap"),
        ("topic_long", "topics.0 is 5,000 characters, over the 100-character cap"),
    ],
)
def test_bad_annotation_values_are_errors_never_coerced_or_clamped(
    llm_server: LoopbackLLMServer, tmp_path: Path, kind: str, error_part: str
) -> None:
    annotations, _, elapsed = run_with_fault(llm_server, kind, tmp_path)

    error = assert_only_the_faulty_one_failed(annotations, error_part)
    assert len(error) <= 300
    assert elapsed < BOUND_S
    assert llm_server.counters.chat_requests == 12
    assert_nothing_paid_twice(llm_server)


def test_successful_answers_are_cached_as_they_arrive_so_a_killed_run_pays_nothing_twice(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    # The server answers until 12 conversations are paid for, then holds every request:
    # the child is killed mid-chunk, with answers received and requests in flight.
    llm_server.configure(Faults(stall_after_successes=12, hang_s=60.0))
    cache_dir = tmp_path / "cache"
    EnrichmentCache(cache_dir)
    child = multiprocessing.get_context("spawn").Process(
        target=_annotate_forty, args=(llm_server.base_url, str(cache_dir))
    )
    child.start()
    try:
        deadline = time.monotonic() + BOUND_S
        while True:
            paid = sum(llm_server.counters.billed.values())
            stored = len(EnrichmentCache(cache_dir))
            if paid >= 12 and stored == paid:
                break
            assert time.monotonic() < deadline, f"{paid} answers paid, {stored} cached"
            assert child.is_alive(), "the child ended before it was killed"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    finally:
        child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL
    paid_before = sum(llm_server.counters.billed.values())
    assert paid_before == stored

    llm_server.configure(Faults(), keep_counters=True)  # the rerun: same server, same cache
    # Requests the killed child had sent may still be in the server's accept queue: count
    # from when the counter has settled (unchanged for a second), not from the kill.
    requests_before, settled_at = llm_server.counters.chat_requests, time.monotonic()
    while time.monotonic() - settled_at < 1.0:
        time.sleep(0.1)
        if llm_server.counters.chat_requests != requests_before:
            requests_before, settled_at = llm_server.counters.chat_requests, time.monotonic()
    rerun = enricher_for(llm_server, cache=EnrichmentCache(cache_dir))
    annotations = rerun.annotate(make_conversations(40))

    assert annotations["error"].null_count() == 40
    assert llm_server.counters.chat_requests - requests_before == 40 - paid_before
    assert rerun.stats.cache_hits == paid_before
    assert sum(llm_server.counters.billed.values()) == 40
    assert_nothing_paid_twice(llm_server)


def _annotate_forty(base_url: str, cache_dir: str) -> None:
    """The child process of the crash test: one chunk of 40 conversations."""
    OpenAIEnricher(
        base_url=base_url,
        api_key=ODD_KEY,
        concurrency=4,
        cache=EnrichmentCache(Path(cache_dir)),
    ).annotate(make_conversations(40))


def test_batch_result_lines_of_odd_shapes_cost_only_their_conversations(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    marked = {i: MARKER for i in range(0, 36, 6)}  # one of each odd shape
    llm_server.configure(Faults(batch_malformed_marker=MARKER, batch_polls=0))
    cache = EnrichmentCache(tmp_path)
    enricher = enricher_for(
        llm_server, mode="batch", cache=cache, batch_options=BatchOptions(poll_interval_s=0.01)
    )

    annotations = enricher.annotate(make_conversations(36, marked=marked))

    failed = annotations.filter(pl.col("error").is_not_null())
    assert sorted(failed["conversation_id"]) == sorted(conversation_id(i) for i in marked)
    assert failed.select(AI_FIELDS).null_count().sum_horizontal().item() == 6 * len(AI_FIELDS)
    assert len(cache) == 30


# -- 2. bounded time ---------------------------------------------------------------------------
def test_a_dripping_body_is_cut_by_the_total_request_deadline(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    # One byte every 0.3 s: every read is quick, the whole body would take minutes.
    annotations, _, elapsed = run_with_fault(
        llm_server,
        "drip",
        tmp_path,
        timeout_s=1.0,
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.01),
        faults={"drip_interval_s": 0.3},
    )
    assert_only_the_faulty_one_failed(annotations, "no complete answer within the 1s deadline")
    assert elapsed < BOUND_S
    assert llm_server.counters.faults["drip"] == 2  # the deadline is transient: retried once
    assert_nothing_paid_twice(llm_server)


def test_a_connection_reset_mid_body_is_retried_and_paid_once(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    annotations, _, elapsed = run_with_fault(llm_server, "reset_once", tmp_path)
    assert annotations["error"].null_count() == 12
    assert elapsed < BOUND_S
    assert llm_server.counters.faults["reset"] == 1
    assert llm_server.counters.chat_requests == 13
    assert_nothing_paid_twice(llm_server)


def test_a_connection_reset_on_every_attempt_costs_only_its_conversation(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    annotations, _, elapsed = run_with_fault(llm_server, "reset", tmp_path)
    assert_only_the_faulty_one_failed(annotations, "APIConnectionError")
    assert elapsed < BOUND_S
    assert llm_server.counters.faults["reset"] == FAST_RETRIES.max_attempts
    assert_nothing_paid_twice(llm_server)


def test_retry_budget_bounds_how_long_a_run_waits_on_failing_conversations(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    # 4 of 40 conversations always fail; without a budget, 50 attempts with backoff up to
    # 2 s each would hold the run for over a minute.
    llm_server.configure(Faults(targeted={MARKER: "status_500"}, latency_s=0.02))
    marked = {i: MARKER for i in (3, 17, 29, 38)}
    enricher = enricher_for(
        llm_server,
        retry=RetryPolicy(max_attempts=50, base_delay_s=0.2, max_delay_s=2.0),
        retry_budget_s=2.0,
        cache=EnrichmentCache(tmp_path),
    )
    started = time.monotonic()
    annotations = enricher.annotate(make_conversations(40, marked=marked))
    elapsed = time.monotonic() - started

    failed = annotations.filter(pl.col("error").is_not_null())
    assert sorted(failed["conversation_id"]) == sorted(conversation_id(i) for i in marked)
    assert all("retry budget" in e and "500" in e for e in failed["error"]), failed["error"][0]
    assert elapsed < BOUND_S
    assert llm_server.counters.faults["status_500"] < 4 * 50  # stopped well before 50 each
    assert enricher.stats.retry_budget_exhausted == 4
    assert_nothing_paid_twice(llm_server)

    # The budget is the run's: the next chunk's failures get no more waiting.
    started = time.monotonic()
    more = enricher.annotate(make_conversations(10, start=100, marked={100: MARKER}))
    assert time.monotonic() - started < BOUND_S
    assert more["error"].null_count() == 9


def test_transient_faults_at_the_end_still_get_their_retries(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    # 500 on the first attempt only: within the budget, every conversation completes.
    llm_server.configure(Faults(targeted={MARKER: "status_500_once"}))
    marked = {i: MARKER for i in range(0, 30, 3)}
    enricher = enricher_for(llm_server, retry_budget_s=5.0)
    annotations = enricher.annotate(make_conversations(30, marked=marked))
    assert annotations["error"].null_count() == 30
    assert llm_server.counters.chat_requests == 40
    assert_nothing_paid_twice(llm_server)


def test_a_conversation_that_failed_in_its_previous_run_gets_one_attempt(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    # Two conversations always get 500; one of them failed in its previous run too.
    llm_server.configure(Faults(targeted={MARKER: "status_500"}))
    enricher = enricher_for(llm_server, retry_budget_s=30.0)
    enricher.failed_before = frozenset({conversation_id(3)})
    annotations = enricher.annotate(make_conversations(12, marked={3: MARKER, 7: MARKER}))

    errors = dict(annotations.select("conversation_id", "error").iter_rows())
    assert "gave up after 1 attempt: " in errors[conversation_id(3)]
    assert "gave up after 4 attempts: " in errors[conversation_id(7)]  # FAST_RETRIES: 4
    assert llm_server.counters.faults["status_500"] == 1 + 4
    assert annotations["error"].null_count() == 10
    assert_nothing_paid_twice(llm_server)


def test_a_server_asking_to_wait_longer_than_a_run_waits_fails_the_conversation_now(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    llm_server.configure(Faults(first_attempts_429=1, retry_after="600"))
    started = time.monotonic()
    annotations = enricher_for(llm_server).annotate(make_conversations(5))
    assert time.monotonic() - started < BOUND_S
    assert annotations["error"].null_count() == 0
    assert all("asks to wait 600s, over the 60s a run waits" in e for e in annotations["error"])
    assert llm_server.counters.chat_requests == 5


# -- 3. circuit breaker ----------------------------------------------------------------------
def test_breaker_stops_sending_when_every_request_fails(
    llm_server: LoopbackLLMServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    llm_server.configure(Faults(permanent_status=401, echo_key_in_errors=True))
    enricher = enricher_for(llm_server, concurrency=8, breaker_window=20)
    started = time.monotonic()

    annotations = enricher.annotate(make_conversations(500))

    assert time.monotonic() - started < BOUND_S
    assert annotations["error"].null_count() == 0
    for name in AI_FIELDS:
        assert annotations[name].null_count() == 500
    # 20 conversations failed in a row, plus what was in flight: not 500 doomed requests.
    assert llm_server.counters.chat_requests <= 20 + 8 * 4
    unavailable = [e for e in annotations["error"] if e.startswith("endpoint unavailable")]
    assert len(unavailable) >= 500 - 20 - 8 * 4
    said = [r for r in caplog.records if "endpoint unavailable" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert enricher.breaker.is_open
    assert enricher.stats.unavailable == len(unavailable)

    # The next chunk of the same run sends nothing.
    before = llm_server.counters.chat_requests
    assert enricher.annotate(make_conversations(50, start=1000))["error"].null_count() == 0
    assert llm_server.counters.chat_requests == before
    assert ODD_KEY not in caplog.text and ODD_KEY not in annotations.write_ndjson()


def test_breaker_opens_on_an_endpoint_that_is_down(tmp_path: Path) -> None:
    with LoopbackLLMServer() as gone:
        base_url = gone.base_url  # a port nobody listens on once it stopped
    enricher = OpenAIEnricher(
        base_url=base_url,
        api_key=ODD_KEY,
        concurrency=8,
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.05),
        breaker_window=10,
    )
    started = time.monotonic()
    annotations = enricher.annotate(make_conversations(2000))
    assert time.monotonic() - started < BOUND_S
    assert annotations["error"].null_count() == 0
    assert enricher.stats.requests <= (10 + 8 * 4) * 3
    assert sum(e.startswith("endpoint unavailable") for e in annotations["error"]) > 1900


def test_breaker_stays_closed_when_failures_are_scattered(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    marked = {i: MARKER for i in range(0, 200, 5)}  # one in five always fails
    llm_server.configure(Faults(targeted={MARKER: "status_401"}))
    enricher = enricher_for(llm_server, breaker_window=20)
    annotations = enricher.annotate(make_conversations(200, marked=marked))
    assert annotations["error"].null_count() == 160
    assert not enricher.breaker.is_open and enricher.stats.unavailable == 0
    assert llm_server.counters.chat_requests == 200


def test_conversations_that_keep_failing_at_the_end_do_not_trip_the_breaker(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    # 25 of 40 always fail: once the 15 others are done, only those 25 are left, failing
    # one after the other. That says nothing about the endpoint: the run goes on.
    marked = {i: MARKER for i in range(15, 40)}
    llm_server.configure(Faults(targeted={MARKER: "status_500"}))
    enricher = enricher_for(
        llm_server,
        retry=RetryPolicy(max_attempts=6, base_delay_s=0.3, max_delay_s=0.3),
        retry_budget_s=1.0,
        breaker_window=10,
    )
    first = enricher.annotate(make_conversations(40, marked=marked))
    assert first["error"].null_count() == 15
    assert not enricher.breaker.is_open and enricher.stats.unavailable == 0

    second = enricher.annotate(make_conversations(10, start=100))  # the next chunk
    assert second["error"].null_count() == 10


# -- 4. redirects and caps -----------------------------------------------------------------
def test_a_redirect_to_another_origin_is_refused_before_anything_is_sent(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    with LoopbackLLMServer() as elsewhere:
        annotations, _, elapsed = run_with_fault(
            llm_server,
            "redirect",
            tmp_path,
            faults={"redirect_to": elsewhere.base_url + "/chat/completions"},
        )
        assert sum(elsewhere.counters.requests.values()) == 0  # no byte of the conversation
    error = assert_only_the_faulty_one_failed(annotations, "redirect to another origin refused")
    assert elsewhere.base_url.removesuffix("/v1") in error
    assert llm_server.counters.chat_requests == 12  # refused, not retried
    assert elapsed < BOUND_S


def test_a_redirect_within_the_same_origin_is_followed(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    moved = llm_server.base_url.removesuffix("/v1") + MOVED_CHAT_PATH
    annotations, _, _ = run_with_fault(
        llm_server, "redirect", tmp_path, faults={"redirect_to": moved}
    )
    assert annotations["error"].null_count() == 12
    assert llm_server.counters.requests[f"POST {MOVED_CHAT_PATH}"] == 1
    assert_nothing_paid_twice(llm_server)


@pytest.mark.parametrize("kind", ["body_huge", "body_huge_unsized"])
def test_a_huge_body_is_cut_at_the_cap(
    llm_server: LoopbackLLMServer, tmp_path: Path, kind: str
) -> None:
    annotations, _, elapsed = run_with_fault(
        llm_server, kind, tmp_path, faults={"huge_body_bytes": 20 * 1024 * 1024}
    )
    assert_only_the_faulty_one_failed(annotations, "response body over the 1,048,576-byte cap")
    assert elapsed < BOUND_S
    assert llm_server.counters.chat_requests == 12  # not retried: it would be cut again


def test_the_body_cap_is_a_setting(llm_server: LoopbackLLMServer, tmp_path: Path) -> None:
    annotations, _, _ = run_with_fault(
        llm_server, "summary_long", tmp_path, max_response_bytes=50_000
    )
    assert_only_the_faulty_one_failed(annotations, "response body over the 50,000-byte cap")


# -- 6. secret hygiene ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [ODD_KEY, "short-k3y", 'quote"and\\backslash-key', "a key with spaces 123"],
)
def test_the_key_is_scrubbed_from_errors_whatever_its_shape(
    llm_server: LoopbackLLMServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    key: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    annotations, enricher, _ = run_with_fault(llm_server, "status_401", tmp_path, api_key=key)
    error = assert_only_the_faulty_one_failed(annotations, "Incorrect API key provided")
    seen = [error, caplog.text, annotations.write_ndjson(), str(enricher.stats.as_metadata())]
    for text in seen:
        assert key not in text
        if len(key) >= 16:
            assert key[4:14] not in text  # nor a fragment of it
