"""The openai enricher inside the Dagster pipeline, against the loopback server."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from enrichment_assets.definitions import LAYER_ASSETS
from enrichment_assets.enrichers.settings import LLMResource
from enrichment_assets.lake import Lake
from enrichment_assets.resources import LakeResource, app_database
from enrichment_assets.runner import land_files
from tests.factories import conversation, message, read_jsonl, write_jsonl
from tests.llm_server import Faults, LoopbackLLMServer

SECRET = "sk-test-NEVER-LOG-THIS-7f3a9c"


def llm(server: LoopbackLLMServer, **overrides: object) -> LLMResource:
    settings = {
        "enricher": "openai",
        "base_url": server.base_url,
        "model": "gpt-4o-mini",
        "api_key": SECRET,
        "concurrency": 8,
        "timeout_s": 5.0,
        "max_attempts": 3,
        **overrides,
    }
    return LLMResource(**settings)  # type: ignore[arg-type]


def run_partition(
    lake: Lake, instance: DagsterInstance, partition: str, enricher: LLMResource
) -> bool:
    result = materialize(
        LAYER_ASSETS,
        partition_key=partition,
        instance=instance,
        resources={"lake": LakeResource(), "enricher": enricher, "app_db": app_database()},
        raise_on_error=False,
    )
    return result.success


def batch_file(tmp_path: Path, count: int = 12) -> Path:
    records = [
        conversation(
            messages=[
                message("user", f"How do I reset password number {i}?"),
                message("assistant", f"Open settings and follow step {i}."),
            ]
        )
        for i in range(count)
    ]
    return write_jsonl(tmp_path / "batch.jsonl", records)


def test_enriches_through_the_endpoint_and_rematerializing_sends_no_request(
    lake: Lake,
    instance: DagsterInstance,
    tmp_path: Path,
    llm_server: LoopbackLLMServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    (partition,) = land_files(lake, instance, [batch_file(tmp_path)])

    assert run_partition(lake, instance, partition, llm(llm_server))
    assert llm_server.counters.chat_requests == 12
    docs = read_jsonl(lake.export_path("enriched", partition))
    assert {d["enrichment"]["enricher"] for d in docs} == {"openai"}
    assert all(d["enrichment"]["error"] is None for d in docs)
    assert all(0.0 <= d["enrichment"]["confidence"] <= 1.0 for d in docs)
    assert all(d["enrichment"]["prompt_tokens"] > 0 for d in docs)

    assert run_partition(lake, instance, partition, llm(llm_server))
    assert llm_server.counters.chat_requests == 12  # every answer came from the cache

    materialization = instance.get_latest_materialization_event(AssetKey("enriched_conversations"))
    assert materialization is not None
    metadata = materialization.asset_materialization.metadata  # type: ignore[union-attr]
    assert metadata["llm_cache_hits"].value == 12
    assert metadata["llm_requests"].value == 0

    outputs = b"".join(p.read_bytes() for p in lake.data_dir.rglob("*") if p.is_file())
    assert SECRET.encode() not in outputs
    assert SECRET not in caplog.text
    for record in instance.get_records_for_run(materialization.run_id).records:
        assert SECRET not in str(record.event_log_entry)


def test_a_failing_endpoint_leaves_ai_fields_null_with_the_error(
    lake: Lake,
    instance: DagsterInstance,
    tmp_path: Path,
    llm_server: LoopbackLLMServer,
) -> None:
    llm_server.configure(Faults(permanent_status=500))
    (partition,) = land_files(lake, instance, [batch_file(tmp_path, count=4)])

    assert run_partition(lake, instance, partition, llm(llm_server, max_attempts=2))
    docs = read_jsonl(lake.export_path("enriched", partition))
    assert len(docs) == 4  # the conversations complete: their messages are valid training data
    for doc in docs:
        enrichment = doc["enrichment"]
        assert enrichment["error"]
        assert SECRET not in enrichment["error"]
        for field in ("summary", "topics", "sentiment", "label", "confidence", "quality_score"):
            assert enrichment[field] is None, field
