"""Issue 21, budgets: an estimate before sending, a refusal over budget, a stop at the
budget, the spend as asset metadata, and no retry before the budget window allows it.

Every scenario runs against the loopback OpenAI-compatible server and asserts the
requests it received.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from enrichment_assets.cli.runner import land_files
from enrichment_assets.defs.automation.failed_partitions import failed_partitions_tick
from enrichment_assets.defs.automation.retry_state import read_retries
from enrichment_assets.defs.automation.settings import RetrySettings
from enrichment_assets.defs.conversations.jobs import LAYER_ASSETS
from enrichment_assets.defs.conversations.partitions import register_summary_days
from enrichment_assets.defs.resources import LLMResource
from enrichment_assets.enrichers.annotation import SYSTEM_PROMPT, ModelPrice
from enrichment_assets.enrichers.budget import BUDGET_EXHAUSTED, next_window
from enrichment_assets.enrichers.openai import OpenAIEnricher
from enrichment_assets.enrichers.pricing import CHARS_PER_TOKEN
from enrichment_assets.enrichers.settings import DEFAULT_PRICES
from enrichment_assets.lake import Lake
from enrichment_assets.partition_retry import BUDGET_STOPPED
from tests.factories import conversation, message, read_jsonl, write_jsonl
from tests.llm_fixtures import layer_resources, make_conversations
from tests.llm_server import Faults, LoopbackLLMServer
from tests.test_sensors import sensor_context

PRICE = DEFAULT_PRICES["gpt-4o-mini"]


def llm(server: LoopbackLLMServer, **overrides: object) -> LLMResource:
    settings = {
        "enricher": "openai",
        "base_url": server.base_url,
        "model": "gpt-4o-mini",
        "api_key": "sk-test-spend",
        "concurrency": 2,
        "timeout_s": 5.0,
        "max_attempts": 2,
        **overrides,
    }
    return LLMResource(**settings)  # type: ignore[arg-type]


def batch(tmp_path: Path, name: str, count: int, word: str = "password") -> Path:
    """`count` conversations; batches with words of one length cost about the same."""
    records = [
        conversation(
            messages=[
                message("user", f"How do I reset my {word} number {i:03d}?"),
                message("assistant", f"Open the settings and follow step {i:03d}."),
            ]
        )
        for i in range(count)
    ]
    return write_jsonl(tmp_path / f"{name}.jsonl", records)


def run(instance: DagsterInstance, partition: str, enricher: LLMResource) -> bool:
    result = materialize(
        LAYER_ASSETS,
        partition_key=partition,
        instance=instance,
        resources=layer_resources(enricher),
        raise_on_error=False,
    )
    return result.success


def enriched_metadata(instance: DagsterInstance, partition: str) -> dict[str, object]:
    records = instance.fetch_materializations(AssetKey("enriched_conversations"), limit=50).records
    for record in records:  # newest first
        materialization = record.asset_materialization
        if materialization is not None and materialization.partition == partition:
            return {key: value.value for key, value in materialization.metadata.items()}
    raise AssertionError(f"no materialization of partition {partition}")


def step_failure(instance: DagsterInstance) -> str:
    (run,) = [r for r in instance.get_runs() if r.is_failure][:1]
    for record in instance.get_records_for_run(run.run_id).records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.is_step_failure:
            return event.step_failure_data.error.message  # type: ignore[union-attr]
    raise AssertionError("no step failure")


def test_a_budget_below_the_estimate_sends_nothing(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    (partition,) = land_files(lake, instance, [batch(tmp_path, "a", 10)])

    assert not run(instance, partition, llm(llm_server, budget_usd=0.000001))

    assert llm_server.counters.chat_requests == 0
    message_ = step_failure(instance)
    assert "over budget: estimated $" in message_
    assert "10 request(s) to send" in message_ and "1 token per 4 characters" in message_
    assert "\n" not in message_.strip()
    assert not lake.layer_path("enriched", partition).exists()


def test_spending_stops_within_one_wave_of_half_the_real_cost(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    """The provider bills 4x the estimate (usage_scale): the estimate passes a budget of
    half the real cost, and the measured spend stops the run there."""
    llm_server.configure(Faults(usage_scale=4.0))
    first, second = land_files(
        lake, instance, [batch(tmp_path, "a", 20), batch(tmp_path, "b", 20, word="passcode")]
    )
    assert run(instance, first, llm(llm_server))
    real = enriched_metadata(instance, first)
    real_cost = float(real["llm_cost_usd"])  # type: ignore[arg-type]
    assert llm_server.counters.chat_requests == 20
    assert float(real["llm_estimated_cost_usd"]) < real_cost / 2  # type: ignore[arg-type]

    budget = real_cost / 2
    assert run(instance, second, llm(llm_server, budget_usd=budget))

    sent = llm_server.counters.chat_requests - 20
    metadata = enriched_metadata(instance, second)
    spent = float(metadata["llm_cost_usd"])  # type: ignore[arg-type]
    per_request = real_cost / 20
    concurrency = 2
    assert 0 < sent < 20
    assert budget <= spent <= budget + concurrency * per_request * 1.2  # one wave past it
    assert metadata["llm_budget_usd"] == pytest.approx(budget, abs=1e-6)
    assert metadata["llm_budget_exhausted"] == 20 - sent
    assert "llm_estimated_cost_usd" in metadata and "llm_estimate_assumes" in metadata
    docs = read_jsonl(lake.export_path("enriched", second))
    stopped = [d for d in docs if d["enrichment"]["error"] == BUDGET_EXHAUSTED]
    assert len(docs) == 20 and len(stopped) == 20 - sent
    assert all(d["enrichment"]["confidence"] is None for d in stopped)
    assert all(d["enrichment"]["summary"] for d in docs if d not in stopped)


def test_the_failed_partitions_sensor_waits_for_the_budget_window(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    # The run must end well before the budget window turns (midnight UTC): a run started
    # in the window's last minutes waits for the next one.
    if (wait := next_window(datetime.now(UTC)) - datetime.now(UTC)) < timedelta(minutes=5):
        time.sleep(wait.total_seconds() + 1)
    llm_server.configure(Faults(usage_scale=4.0))  # billed 4x the estimate
    (partition,) = land_files(lake, instance, [batch(tmp_path, "a", 12)])
    # Over the estimate (~$0.0015), under the real cost (~$0.004): stopped part way.
    assert run(instance, partition, llm(llm_server, budget_usd=0.0016, concurrency=1))
    sent = llm_server.counters.chat_requests
    assert 0 < sent < 12

    ended = datetime.now(UTC)
    # Past the retry backoff (1 min), before the window turns.
    halfway = ended + (next_window(ended) - ended) / 2
    assert halfway - ended > timedelta(minutes=1)
    with sensor_context(instance) as context:
        later = failed_partitions_tick(context, lake, RetrySettings(), now=halfway)
    assert not later.run_requests  # the backoff (1 min) is over, the budget window is not
    entry = read_retries(instance)[partition]
    assert entry.reason == BUDGET_STOPPED
    assert entry.next_attempt_at == next_window(ended).timestamp()

    with sensor_context(instance, later.cursor) as context:
        tomorrow = failed_partitions_tick(
            context, lake, RetrySettings(), now=next_window(ended) + timedelta(minutes=1)
        )
    assert [r.partition_key for r in tomorrow.run_requests or []] == [partition]
    assert llm_server.counters.chat_requests == sent  # the sensor itself sends nothing


def test_the_daily_limit_counts_what_earlier_runs_spent_today(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    first, second = land_files(
        lake, instance, [batch(tmp_path, "a", 10), batch(tmp_path, "b", 10, word="passcode")]
    )
    assert run(instance, first, llm(llm_server))
    spent = float(enriched_metadata(instance, first)["llm_cost_usd"])  # type: ignore[arg-type]
    estimate = float(enriched_metadata(instance, first)["llm_estimated_cost_usd"])  # type: ignore[arg-type]

    # Room for the first run's spend and half the second's estimate: refused, nothing sent.
    daily = spent + estimate / 2
    assert not run(instance, second, llm(llm_server, daily_budget_usd=daily))
    assert llm_server.counters.chat_requests == 10
    assert "over budget: estimated $" in step_failure(instance)

    assert run(instance, second, llm(llm_server, daily_budget_usd=spent + 2 * estimate))
    assert llm_server.counters.chat_requests == 20


def test_cached_prompt_tokens_are_priced_as_the_provider_prices_them(
    llm_server: LoopbackLLMServer,
) -> None:
    llm_server.configure(Faults(cached_prefix_tokens=200))
    price = ModelPrice(input_per_1m=1.0, output_per_1m=4.0, cached_input_per_1m=0.25)
    enricher = OpenAIEnricher(base_url=llm_server.base_url, api_key="sk-x", price=price)

    enricher.annotate(make_conversations(5))

    stats = enricher.stats
    assert stats.provider_cached_tokens == 5 * 200
    expected = (
        (stats.prompt_tokens - 1000) * 1.0 + 1000 * 0.25 + stats.completion_tokens * 4.0
    ) / 1e6
    assert stats.cost_usd == pytest.approx(expected)
    assert stats.cost_usd < price.cost(stats.prompt_tokens, stats.completion_tokens)
    assert enricher.budget.spent_usd == pytest.approx(expected)


def test_the_static_prompt_comes_first_and_the_estimate_matches_the_character_rule(
    llm_server: LoopbackLLMServer,
) -> None:
    conversations = make_conversations(4)
    enricher = OpenAIEnricher(base_url=llm_server.base_url, api_key="sk-x", price=PRICE)

    estimate = enricher.estimate(conversations)
    assert llm_server.counters.chat_requests == 0  # estimating sends nothing
    enricher.annotate(conversations)

    assert estimate.requests == 4 and estimate.cached == 0
    # The loopback server counts prompt tokens by the same rule (chars / 4).
    assert abs(estimate.prompt_tokens - enricher.stats.prompt_tokens) <= 4 * 8
    assert len(SYSTEM_PROMPT) // CHARS_PER_TOKEN * 4 < estimate.prompt_tokens


def test_the_static_prompt_is_sent_first_so_provider_prompt_caching_applies(
    llm_server: LoopbackLLMServer,
) -> None:
    OpenAIEnricher(base_url=llm_server.base_url, api_key="sk-x").annotate(make_conversations(3))

    assert llm_server.counters.message_roles == {"system,user": 3}
    assert llm_server.counters.system_prompts == {SYSTEM_PROMPT}  # one prefix for every request


def cli(
    tmp_path: Path, server: LoopbackLLMServer, *args: str, **env: str
) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    environment = {
        **os.environ,
        "ENRICH_DATA_DIR": str(tmp_path / "cli-data"),
        "DAGSTER_HOME": str(home),
        "ENRICH_ENRICHER": "openai",
        "ENRICH_LLM_BASE_URL": server.base_url,
        "ENRICH_LLM_API_KEY": "sk-test-cli",
        **env,
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "enrich"), *args],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


def test_enrich_run_dry_run_prints_the_estimate_and_over_budget_refuses_in_one_line(
    tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    source = batch(tmp_path, "a", 8)

    dry = cli(tmp_path, llm_server, "run", "--dry-run", str(source))
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "estimated LLM spend (dry run: nothing sent)" in dry.stdout
    assert "1 token per 4 characters" in dry.stdout and "budget: none set" in dry.stdout
    assert llm_server.counters.chat_requests == 0

    refused = cli(
        tmp_path, llm_server, "run", "--no-summaries", str(source), ENRICH_LLM_BUDGET_USD="0.000001"
    )
    assert refused.returncode == 1
    problems = [line for line in refused.stderr.splitlines() if "over budget" in line]
    assert len(problems) == 1 and "nothing sent" in problems[0]
    assert "Traceback" not in refused.stderr + refused.stdout
    assert llm_server.counters.chat_requests == 0

    done = cli(tmp_path, llm_server, "run", "--no-summaries", str(source))
    assert done.returncode == 0, done.stderr[-2000:]
    assert llm_server.counters.chat_requests == 8


def test_the_daily_summaries_stop_at_the_budget_and_report_their_cost(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    from enrichment_assets.defs.summaries.assets import conversation_summaries
    from tests.test_summaries import DAY, at, chat, land_and_run, summaries_of

    # Batches through the heuristic (free); the summaries of the day through the endpoint.
    land_and_run(
        lake,
        instance,
        tmp_path / "day.jsonl",
        [
            chat(f"user-{n}", at(DAY, "09:00:00", "09:00:10", "09:00:20", "09:00:30", "09:00:40"))
            for n in range(3)
        ],
    )

    def summarize(enricher: LLMResource) -> dict[str, object]:
        register_summary_days(instance, [DAY])  # a day partition exists once it holds data
        result = materialize(
            [conversation_summaries],
            partition_key=DAY,
            instance=instance,
            resources=layer_resources(enricher),
        )
        assert result.success
        (materialization,) = result.asset_materializations_for_node("conversation_summaries")
        return {key: value.value for key, value in materialization.metadata.items()}

    spent_nothing = summarize(llm(llm_server, budget_usd=0.0))
    assert llm_server.counters.chat_requests == 0
    assert summaries_of(lake)["error"].to_list() == [BUDGET_EXHAUSTED] * 3
    assert spent_nothing["llm_cost_usd"] == 0.0 and spent_nothing["llm_budget_usd"] == 0.0

    paid = summarize(llm(llm_server))
    assert llm_server.counters.chat_requests == 1  # three windows, the same messages: paid once
    assert summaries_of(lake)["error"].to_list() == [None] * 3
    assert float(paid["llm_cost_usd"]) > 0  # type: ignore[arg-type]  # counted in the daily limit
