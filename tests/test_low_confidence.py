"""Issue 21, the low-confidence rule: below 0.7, re-asked once the last attempt is 24 h
old, up to 5 attempts, optionally by an escalation model; every attempt kept, the best
answer current, visible in `enrich status ID` and counted in the health report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, RunRequest, materialize

from enrichment_assets.cli.runner import land_files
from enrichment_assets.defs.automation.low_confidence import low_confidence_tick
from enrichment_assets.defs.conversations.jobs import LAYER_ASSETS
from enrichment_assets.defs.resources import LLMResource
from enrichment_assets.health_metrics import pipeline_health
from enrichment_assets.lake import Lake
from enrichment_assets.low_confidence import LowConfidenceRule, read_attempts
from tests.cli import enrich
from tests.factories import conversation, message, write_jsonl
from tests.llm_fixtures import layer_resources
from tests.llm_server import Faults, LoopbackLLMServer
from tests.test_sensors import sensor_context

LOW, SURE = "LOWCONF", "SURE"


def llm(server: LoopbackLLMServer, **overrides: object) -> LLMResource:
    return LLMResource(
        enricher="openai",
        base_url=server.base_url,
        api_key="sk-test",
        concurrency=4,
        **overrides,  # type: ignore[arg-type]
    )


def batch(tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    """Six conversations: three the server answers with confidence 0.3, three with 0.9."""
    records = [
        conversation(
            messages=[
                message("user", f"Question {i}, {LOW if i % 2 else SURE}: how do I fix it?"),
                message("assistant", f"Try step {i}."),
            ]
        )
        for i in range(6)
    ]
    low = [r["conversation_id"] for i, r in enumerate(records) if i % 2]
    sure = [r["conversation_id"] for i, r in enumerate(records) if not i % 2]
    return write_jsonl(tmp_path / "batch.jsonl", records), low, sure


def run(
    instance: DagsterInstance, partition: str, enricher: LLMResource, request: RunRequest | None
) -> None:
    result = materialize(
        LAYER_ASSETS,
        partition_key=partition,
        instance=instance,
        resources=layer_resources(enricher),
        selection=request.asset_selection if request else None,
        run_config=request.run_config if request else None,
    )
    assert result.success


def tick(instance: DagsterInstance, lake: Lake, rule: LowConfidenceRule, now: datetime) -> list:
    with sensor_context(instance) as context:
        return low_confidence_tick(context, lake, rule, now=now).run_requests or []


def current(lake: Lake, partition: str) -> dict[str, tuple[float, str]]:
    rows = pl.read_parquet(lake.layer_path("enriched", partition)).select(
        "conversation_id",
        pl.col("enrichment").struct.field("confidence"),
        pl.col("enrichment").struct.field("model"),
    )
    return {r[0]: (r[1], r[2]) for r in rows.iter_rows()}


def test_reasks_exactly_the_eligible_conversations_by_the_escalation_model(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    llm_server.configure(Faults(confidence_by_marker={LOW: 0.3, SURE: 0.9}))
    source, low, sure = batch(tmp_path)
    (partition,) = land_files(lake, instance, [source])
    run(instance, partition, llm(llm_server), None)
    first_run = datetime.now(UTC)
    assert llm_server.counters.chat_requests == 6

    rule = LowConfidenceRule(escalation_model="gpt-4o")
    assert tick(instance, lake, rule, first_run + timedelta(hours=23)) == []  # not 24 h old yet
    (request,) = tick(instance, lake, rule, first_run + timedelta(hours=25))
    config = request.run_config["ops"]["enriched_conversations"]["config"]
    assert sorted(config["conversation_ids"]) == sorted(low) and config["low_confidence"]

    llm_server.configure(
        Faults(confidence_by_marker={LOW: 0.3, SURE: 0.9}, confidence_by_model={"gpt-4o": 0.95})
    )
    run(instance, partition, llm(llm_server, escalation_model="gpt-4o"), request)

    # Exactly the three low ones were asked again, by the escalation model, once each.
    assert llm_server.counters.models == {"gpt-4o": 3}
    assert sorted(llm_server.counters.texts) == sorted(
        f"user: Question {i}, {LOW}: how do I fix it?\nassistant: Try step {i}." for i in (1, 3, 5)
    )
    now = current(lake, partition)
    assert all(now[c] == (0.95, "gpt-4o") for c in low)  # the better answer is current
    assert all(now[c] == (0.9, "gpt-4o-mini") for c in sure)  # untouched
    attempts = read_attempts(lake, partition)
    assert attempts.height == 9
    assert attempts.filter(pl.col("reason") == "low_confidence").height == 3
    assert tick(instance, lake, rule, first_run + timedelta(hours=50)) == []  # now confident


def test_keeps_the_best_answer_stops_after_the_attempt_limit_and_shows_it(
    lake: Lake,
    instance: DagsterInstance,
    tmp_path: Path,
    llm_server: LoopbackLLMServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    llm_server.configure(Faults(confidence_by_marker={LOW: 0.3, SURE: 0.9}))
    source, low, _ = batch(tmp_path)
    (partition,) = land_files(lake, instance, [source])
    run(instance, partition, llm(llm_server), None)
    started = datetime.now(UTC)

    rule = LowConfidenceRule(after_hours=1, max_attempts=2)  # the same model, re-asked
    (request,) = tick(instance, lake, rule, started + timedelta(hours=2))
    llm_server.configure(Faults(confidence_by_marker={LOW: 0.2, SURE: 0.9}))  # a worse answer
    run(instance, partition, llm(llm_server), request)
    assert llm_server.counters.models == {"gpt-4o-mini": 3}  # no cache: really asked again

    assert all(current(lake, partition)[c] == (0.3, "gpt-4o-mini") for c in low)  # kept best
    assert tick(instance, lake, rule, started + timedelta(hours=10)) == []  # out of attempts

    shown = enrich(capsys, "status", low[0], "--json")
    assert shown.code == 0, shown.stderr
    attempts = shown.json()["enrichment_attempts"]
    assert [(a["attempt"], a["confidence"], a["current"]) for a in attempts] == [
        (1, 0.3, True),
        (2, 0.2, False),
    ]
    assert [a["model"] for a in attempts] == ["gpt-4o-mini", "gpt-4o-mini"]

    monkeypatch.setenv("ENRICH_LOW_CONFIDENCE_MAX_ATTEMPTS", "2")
    counted = pipeline_health(lake, low_confidence=LowConfidenceRule.from_env())["metrics"][
        "low_confidence"
    ]
    assert counted == {"below": 0.7, "due": 0, "waiting": 0, "out_of_attempts": 3, "reasked": 3}
