"""The `openai` enricher against the loopback server: issue 6's acceptance."""

# The `llm_server` fixture is imported (tests/conftest.py belongs to the pipeline tests),
# so every test parameter named after it "redefines" the import.

from __future__ import annotations

import asyncio
import email.utils
import logging
import multiprocessing
import sqlite3
import time
from pathlib import Path

import polars as pl
import pytest

from enrichment_assets.defs.resources import LLMResource
from enrichment_assets.enrichers.annotation import (
    ANNOTATION_JSON_SCHEMA,
    PROMPT_VERSION,
    ModelPrice,
)
from enrichment_assets.enrichers.base import AI_FIELDS, ANNOTATION_SCHEMA, Enricher
from enrichment_assets.enrichers.batch import BatchOptions
from enrichment_assets.enrichers.cache import (
    CachedAnnotation,
    EnrichmentCache,
    annotation_cache_key,
)
from enrichment_assets.enrichers.openai import OpenAIEnricher
from enrichment_assets.enrichers.retry import RetryPolicy, parse_duration, server_retry_hint
from enrichment_assets.enrichers.settings import SHARED_FIELDS, LLMSettings
from tests.llm_fixtures import make_conversations
from tests.llm_server import Faults, LoopbackLLMServer

FAKE_KEY = "sk-test-DISTINCTIVE-7f3a9c2e5b1d"
FAST_RETRIES = RetryPolicy(max_attempts=10, base_delay_s=0.01, max_delay_s=0.05)


def enricher_for(server: LoopbackLLMServer, **options) -> OpenAIEnricher:
    options.setdefault("retry", FAST_RETRIES)
    options.setdefault("api_key", FAKE_KEY)
    options.setdefault("concurrency", 16)
    options.setdefault("batch_options", BatchOptions(poll_interval_s=0.01))
    return OpenAIEnricher(base_url=server.base_url, **options)


def assert_all_enriched(annotations: pl.DataFrame) -> None:
    assert annotations["error"].null_count() == annotations.height, annotations["error"].to_list()
    for name in AI_FIELDS:
        assert annotations[name].null_count() == 0, name


def assert_all_failed(annotations: pl.DataFrame) -> None:
    assert annotations["error"].null_count() == 0
    for name in AI_FIELDS:
        assert annotations[name].null_count() == annotations.height, name


def test_is_an_enricher_and_returns_the_annotation_schema(llm_server: LoopbackLLMServer) -> None:
    enricher = enricher_for(llm_server)
    annotations = enricher.annotate(make_conversations(3))
    assert isinstance(enricher, Enricher)
    assert annotations.schema == pl.Schema(ANNOTATION_SCHEMA)
    assert set(annotations["enricher"]) == {"openai"}
    assert set(annotations["prompt_version"]) == {PROMPT_VERSION}
    assert enricher.annotate(make_conversations(0)).height == 0


def test_every_conversation_enriched_exactly_once_despite_429s_and_500s(
    llm_server: LoopbackLLMServer,
) -> None:
    llm_server.configure(Faults(seed=6, rate_429=0.2, rate_500=0.1, retry_after="0"))
    conversations = make_conversations(300)
    enricher = enricher_for(llm_server, concurrency=32)

    annotations = enricher.annotate(conversations)

    assert_all_enriched(annotations)
    assert sorted(annotations["conversation_id"]) == sorted(conversations["conversation_id"])
    successes = llm_server.counters.successes
    assert len(successes) == 300 and set(successes.values()) == {1}
    faults = llm_server.counters.faults
    assert faults["429"] > 30 and faults["500"] > 10
    assert enricher.stats.retries == faults["429"] + faults["500"]
    assert enricher.stats.requests == llm_server.counters.chat_requests


def test_permanently_failing_endpoint_leaves_ai_fields_null_with_error(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    llm_server.configure(Faults(permanent_status=503))
    cache = EnrichmentCache(tmp_path)
    enricher = enricher_for(llm_server, cache=cache, retry=RetryPolicy(3, base_delay_s=0.01))

    annotations = enricher.annotate(make_conversations(20))

    assert_all_failed(annotations)
    assert all("gave up after 3 attempts" in e and "503" in e for e in annotations["error"])
    assert not any(annotations["cached"])
    assert llm_server.counters.chat_requests == 60
    assert enricher.stats.errors == 20
    # Failures are not cached: the next run (the failed-partition sensor's) asks again.
    assert len(cache) == 0
    llm_server.configure(Faults())
    next_run = enricher_for(llm_server, cache=cache)
    assert_all_enriched(next_run.annotate(make_conversations(20)))
    assert llm_server.counters.chat_requests == 20


def test_client_errors_other_than_429_are_not_retried(llm_server: LoopbackLLMServer) -> None:
    llm_server.configure(Faults(permanent_status=422))
    annotations = enricher_for(llm_server).annotate(make_conversations(10))
    assert_all_failed(annotations)
    assert llm_server.counters.chat_requests == 10


def test_second_annotate_over_same_input_sends_zero_requests(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    conversations = make_conversations(50)
    first = enricher_for(llm_server, cache=EnrichmentCache(tmp_path))
    enriched = first.annotate(conversations)
    assert llm_server.counters.chat_requests == 50
    llm_server.configure(Faults())  # clears the counters

    again = enricher_for(llm_server, cache=EnrichmentCache(tmp_path))  # a new run
    reenriched = again.annotate(conversations)

    assert llm_server.counters.chat_requests == 0
    assert sum(llm_server.counters.requests.values()) == 0
    assert reenriched["cached"].all()
    assert reenriched["prompt_tokens"].sum() == 0 and reenriched["completion_tokens"].sum() == 0
    assert again.stats.cache_hits == 50 and again.stats.cache_misses == 0
    assert again.stats.cached_prompt_tokens == first.stats.prompt_tokens
    assert reenriched.select(AI_FIELDS).equals(enriched.select(AI_FIELDS))


def test_cache_key_changes_with_model_prompt_schema_and_content() -> None:
    turns = [("user", "hi"), ("assistant", "hello")]
    base = {"model": "m", "prompt_version": "v1", "schema": {"a": 1}, "turns": turns}
    key = annotation_cache_key(**base)
    assert key == annotation_cache_key(**base)
    assert key != annotation_cache_key(**{**base, "model": "m2"})
    assert key != annotation_cache_key(**{**base, "prompt_version": "v2"})
    assert key != annotation_cache_key(**{**base, "schema": {"a": 2}})
    assert key != annotation_cache_key(**{**base, "turns": [("user", "hi"), ("user", "hello")]})


def test_repeated_conversation_in_a_chunk_is_paid_once(llm_server: LoopbackLLMServer) -> None:
    once = make_conversations(5)
    twice = pl.concat([once, once.with_columns(pl.col("conversation_id") + "-copy")])
    enricher = enricher_for(llm_server)
    annotations = enricher.annotate(twice)
    assert_all_enriched(annotations)
    assert annotations.height == 10 and llm_server.counters.chat_requests == 5
    assert annotations["cached"].sum() == 5 and enricher.stats.cache_hits == 5


def test_api_key_absent_from_logs_outputs_and_errors(
    llm_server: LoopbackLLMServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # the openai and httpx loggers included
    llm_server.configure(Faults(permanent_status=401, echo_key_in_errors=True))
    enricher = enricher_for(llm_server, cache=EnrichmentCache(tmp_path))
    failed = enricher.annotate(make_conversations(5))
    llm_server.configure(Faults(rate_429=0.3, seed=1))
    enriched = enricher.annotate(make_conversations(5, start=5))
    settings = LLMSettings(enricher="openai", api_key=FAKE_KEY)

    assert f"Bearer {FAKE_KEY}" in llm_server.counters.authorization  # it was sent...
    seen = [
        caplog.text,
        *capsys.readouterr(),
        failed.write_ndjson(),
        enriched.write_ndjson(),
        str(enricher.stats.as_metadata()),
        repr(enricher),
        repr(settings),
        repr(LLMResource(api_key=FAKE_KEY)),
        (tmp_path / "llm_annotations.sqlite3").read_bytes().decode("latin-1"),
    ]
    assert failed["error"].null_count() == 0 and "Incorrect API key" in failed["error"][0]
    for text in seen:  # ...and never shown
        assert FAKE_KEY not in text
        assert FAKE_KEY[-12:] not in text


def test_batch_mode_gives_the_same_annotations_as_online_mode(
    llm_server: LoopbackLLMServer,
) -> None:
    conversations = make_conversations(40)
    online = enricher_for(llm_server).annotate(conversations)
    llm_server.configure(Faults(batch_polls=3))
    batch_enricher = enricher_for(llm_server, mode="batch", price=ModelPrice(1.0, 2.0))

    batch = batch_enricher.annotate(conversations)

    assert_all_enriched(batch)
    columns = ["conversation_id", *AI_FIELDS]
    assert (
        batch.select(columns)
        .sort("conversation_id")
        .equals(online.select(columns).sort("conversation_id"))
    )
    requests = llm_server.counters.requests
    assert llm_server.counters.chat_requests == 0
    assert requests["POST /v1/files"] == 1 and requests["POST /v1/batches"] == 1
    assert requests["GET /v1/batches/{id}"] == 4
    assert batch_enricher.stats.prompt_tokens == batch["prompt_tokens"].sum() > 0
    full_price = ModelPrice(1.0, 2.0).cost(
        batch_enricher.stats.prompt_tokens, batch_enricher.stats.completion_tokens
    )
    assert batch_enricher.stats.cost_usd == pytest.approx(full_price / 2)


def test_batch_partial_failures_become_null_error_rows(
    llm_server: LoopbackLLMServer, tmp_path: Path
) -> None:
    llm_server.configure(Faults(seed=3, batch_rate_error=0.2, batch_rate_missing=0.1))
    cache = EnrichmentCache(tmp_path)
    annotations = enricher_for(llm_server, mode="batch", cache=cache).annotate(
        make_conversations(100)
    )
    failed = annotations.filter(pl.col("error").is_not_null())
    errors = failed["error"].to_list()
    assert sum("HTTP 500" in e for e in errors) > 5
    assert sum("missing from the results of batch" in e for e in errors) > 2
    assert failed.select(AI_FIELDS).null_count().sum_horizontal().item() == failed.height * 7
    assert_all_enriched(annotations.filter(pl.col("error").is_null()))
    assert len(cache) == annotations.height - failed.height


@pytest.mark.parametrize(
    ("fault", "expected_error"),
    [
        ("rate_schema_violation", "violates the annotation schema: confidence=1.7"),
        ("rate_malformed", "the answer is not valid JSON"),
    ],
)
def test_invalid_responses_are_failures_never_defaults(
    llm_server: LoopbackLLMServer, tmp_path: Path, fault: str, expected_error: str
) -> None:
    llm_server.configure(Faults(**{fault: 1.0}))
    cache = EnrichmentCache(tmp_path)
    enricher = enricher_for(llm_server, cache=cache)

    annotations = enricher.annotate(make_conversations(10))

    assert_all_failed(annotations)
    assert all(expected_error in e for e in annotations["error"]), annotations["error"][0]
    assert len(cache) == 0
    assert llm_server.counters.chat_requests == 10  # an answer that came back is not re-bought


def test_falls_back_to_json_object_when_server_rejects_json_schema(
    llm_server: LoopbackLLMServer,
) -> None:
    llm_server.configure(Faults(json_schema_unsupported=True))
    enricher = enricher_for(llm_server, concurrency=4)

    annotations = enricher.annotate(make_conversations(30))

    assert_all_enriched(annotations)
    formats = llm_server.counters.response_formats
    assert 1 <= formats["json_schema"] <= 4  # only what was in flight before the first 400
    assert formats["json_object"] == 30
    assert enricher.stats.response_format == "json_object"


def test_honours_retry_after_seconds(llm_server: LoopbackLLMServer) -> None:
    llm_server.configure(Faults(first_attempts_429=1, retry_after="1"))
    enricher = enricher_for(llm_server)
    started = time.monotonic()
    annotations = enricher.annotate(make_conversations(4))
    assert time.monotonic() - started >= 1.0
    assert_all_enriched(annotations)
    assert llm_server.counters.chat_requests == 8


def test_honours_ratelimit_reset_header(llm_server: LoopbackLLMServer) -> None:
    llm_server.configure(
        Faults(first_attempts_429=1, retry_after=None, ratelimit_reset_requests="600ms")
    )
    started = time.monotonic()
    assert_all_enriched(enricher_for(llm_server).annotate(make_conversations(4)))
    assert time.monotonic() - started >= 0.6


def test_retry_hints_from_headers() -> None:
    assert parse_duration("1s") == 1.0
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("soon") is None
    assert server_retry_hint(429, {"retry-after": "7"}) == 7.0
    in_30s = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= server_retry_hint(503, {"retry-after": in_30s}) <= 30
    exhausted_tokens = {
        "x-ratelimit-remaining-requests": "10",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert server_retry_hint(429, exhausted_tokens) == 360.0
    assert server_retry_hint(500, exhausted_tokens) is None


def test_hung_requests_time_out_and_are_retried(llm_server: LoopbackLLMServer) -> None:
    llm_server.configure(Faults(seed=2, rate_hang=0.2, hang_s=4.0))
    enricher = enricher_for(llm_server, timeout_s=1.0)
    annotations = enricher.annotate(make_conversations(20))
    assert_all_enriched(annotations)
    assert llm_server.counters.faults["hang"] >= 1
    # Every hang cost a retry; on a loaded machine a slow ordinary answer may time out too.
    assert enricher.stats.retries >= llm_server.counters.faults["hang"]
    assert len(llm_server.counters.successes) == 20  # every conversation got its answer


def test_requests_per_minute_limit_paces_requests(llm_server: LoopbackLLMServer) -> None:
    enricher = enricher_for(llm_server, rpm=600)  # 10/s, about a second of burst
    started = time.monotonic()
    assert_all_enriched(enricher.annotate(make_conversations(25)))
    assert time.monotonic() - started >= 1.2


def test_reports_progress_and_works_inside_a_running_event_loop(
    llm_server: LoopbackLLMServer,
) -> None:
    calls: list[tuple[int, int]] = []
    enricher = enricher_for(llm_server, on_progress=lambda done, total: calls.append((done, total)))

    async def from_async_code() -> pl.DataFrame:
        return enricher.annotate(make_conversations(30))

    assert_all_enriched(asyncio.run(from_async_code()))
    assert calls[-1] == (30, 30) and len(calls) == 10


def _write_overlapping(directory: str, start: int, stop: int) -> None:
    cache = EnrichmentCache(Path(directory))
    for chunk in range(start, stop, 50):
        cache.put_many(
            CachedAnnotation(
                key=f"key-{i}",
                model="m",
                prompt_version="v",
                annotation={"summary": f"s{i}", "writer": start},
                prompt_tokens=i,
                completion_tokens=1,
            )
            for i in range(chunk, min(chunk + 50, stop))
        )
        cache.get_many(f"key-{i}" for i in range(start, stop, 7))


def test_cache_is_safe_under_two_processes_writing_overlapping_keys(tmp_path: Path) -> None:
    EnrichmentCache(tmp_path)
    spawn = multiprocessing.get_context("spawn")
    writers = [
        spawn.Process(target=_write_overlapping, args=(str(tmp_path), 0, 3000)),
        spawn.Process(target=_write_overlapping, args=(str(tmp_path), 1000, 4000)),
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0

    cache = EnrichmentCache(tmp_path)
    stored = cache.get_many(f"key-{i}" for i in range(4000))
    assert len(stored) == len(cache) == 4000
    assert all(
        entry.annotation["summary"] == f"s{entry.prompt_tokens}" for entry in stored.values()
    )
    with sqlite3.connect(cache.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_settings_read_the_environment_contract(tmp_path: Path) -> None:
    env = {
        "ENRICH_ENRICHER": "openai",
        "ENRICH_LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "ENRICH_LLM_MODEL": "my-model",
        "OPENAI_API_KEY": FAKE_KEY,
        "ENRICH_LLM_CONCURRENCY": "8",
        "ENRICH_LLM_TIMEOUT_S": "5",
        "ENRICH_LLM_MAX_ATTEMPTS": "2",
        "ENRICH_LLM_RPM": "",
        "ENRICH_LLM_TPM": "100000",
        "ENRICH_LLM_MODE": "batch",
        "ENRICH_LLM_PRICES": '{"my-model": {"input_per_1m": 1, "output_per_1m": 3}}',
        "ENRICH_LLM_RETRY_BUDGET_S": "2.5",
        "ENRICH_LLM_BREAKER_WINDOW": "0",
        "ENRICH_LLM_MAX_RESPONSE_BYTES": "65536",
    }
    settings = LLMSettings.from_env(env)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == FAKE_KEY
    assert (settings.concurrency, settings.rpm, settings.tpm) == (8, None, 100_000)

    enricher = settings.build_enricher(tmp_path)
    assert isinstance(enricher, OpenAIEnricher)
    assert enricher.price == ModelPrice(1.0, 3.0) and enricher.mode == "batch"
    assert enricher.cache is not None and enricher.retry.max_attempts == 2
    assert enricher.retry_budget.seconds == 2.5 and enricher.breaker.window == 0
    assert enricher.max_response_bytes == 65536

    resource = LLMResource.from_env(env)
    assert FAKE_KEY not in repr(resource)
    assert (resource.retry_budget_s, resource.breaker_window, resource.max_response_bytes) == (
        2.5,
        0,
        65536,
    )
    # One set of fields: the resource carries every setting, and gives them back unchanged.
    assert set(LLMResource.model_fields) == {*SHARED_FIELDS, "api_key", "prices_json"}
    assert resource.settings().model_dump(exclude={"api_key"}) == settings.model_dump(
        exclude={"api_key"}
    )
    defaults = LLMSettings.from_env({})
    assert (defaults.timeout_s, defaults.retry_budget_s, defaults.breaker_window) == (60, 5, 20)
    assert defaults.max_response_bytes == 1024 * 1024
    assert LLMSettings.from_env({}).enricher == "heuristic"
    with pytest.raises(ValueError, match="ENRICH_LLM_PRICES"):
        LLMSettings.from_env({"ENRICH_LLM_PRICES": "[1, 2]"})


def test_heuristic_is_the_default_enricher() -> None:
    heuristic = pytest.importorskip("enrichment_assets.enrichers.heuristic")
    enricher = LLMSettings.from_env({}).build_enricher(None)
    assert isinstance(enricher, heuristic.HeuristicEnricher)


def test_strict_schema_is_closed_and_fully_required() -> None:
    assert ANNOTATION_JSON_SCHEMA["additionalProperties"] is False
    assert set(ANNOTATION_JSON_SCHEMA["required"]) == set(ANNOTATION_JSON_SCHEMA["properties"])
    assert set(ANNOTATION_JSON_SCHEMA["properties"]) == set(AI_FIELDS)
