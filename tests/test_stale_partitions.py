"""Issue 21, staleness by code version: a new prompt version (or model) marks exactly the
enriched partitions stale in Dagster, with the reason, and `enrich run --stale` re-enriches
only those, sending requests for their conversations only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetsDefinition, DagsterInstance, Definitions, materialize

from enrichment_assets.cli.runner import land_files
from enrichment_assets.cli.stale_partitions import reenrich_stale, stale_partitions
from enrichment_assets.defs.conversations.enriched import enriched_conversations
from enrichment_assets.defs.conversations.jobs import conversations_pipeline
from enrichment_assets.defs.conversations.normalized import normalized_conversations
from enrichment_assets.defs.conversations.raw import raw_conversations
from enrichment_assets.defs.conversations.validated import validated_conversations
from enrichment_assets.defs.resources import (
    LakeResource,
    LLMResource,
    PiiRedactionResource,
    app_database,
)
from enrichment_assets.enrichers import annotation
from enrichment_assets.enrichers import openai as openai_enricher
from enrichment_assets.enrichers.code_version import enrichment_code_version
from enrichment_assets.lake import Lake
from tests.factories import conversation, message, write_jsonl
from tests.llm_server import LoopbackLLMServer


def llm(server: LoopbackLLMServer) -> LLMResource:
    return LLMResource(
        enricher="openai", base_url=server.base_url, api_key="sk-test", concurrency=4
    )


def batch(tmp_path: Path, name: str, count: int) -> Path:
    records = [
        conversation(
            messages=[
                message("user", f"{name}: how do I fix problem {i}?"),
                message("assistant", f"Restart it, then check step {i}."),
            ]
        )
        for i in range(count)
    ]
    return write_jsonl(tmp_path / f"{name}.jsonl", records)


def pipeline_defs(server: LoopbackLLMServer) -> Definitions:
    """The pipeline with the enriched asset's code version computed now (as a code location
    loading after an edit of the prompt would)."""
    version = enrichment_code_version(llm(server).settings())
    enriched: AssetsDefinition = enriched_conversations.map_asset_specs(
        lambda spec: spec.replace_attributes(code_version=version)
    )
    return Definitions(
        assets=[raw_conversations, validated_conversations, enriched, normalized_conversations],
        jobs=[conversations_pipeline],
        resources={
            "lake": LakeResource(),
            "enricher": llm(server),
            "app_db": app_database(),
            "pii": PiiRedactionResource(mode="off"),
        },
    )


def materialize_with(defs: Definitions, instance: DagsterInstance, partition: str) -> None:
    assets = [a for a in defs.assets or [] if isinstance(a, AssetsDefinition)]
    result = materialize(
        assets, partition_key=partition, instance=instance, resources=defs.resources
    )
    assert result.success


def test_a_new_prompt_version_marks_exactly_the_enriched_partitions_stale_and_reenriches_them(
    lake: Lake,
    instance: DagsterInstance,
    tmp_path: Path,
    llm_server: LoopbackLLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second, never = land_files(
        lake,
        instance,
        [batch(tmp_path, "alpha", 4), batch(tmp_path, "beta", 3), batch(tmp_path, "gamma", 5)],
    )
    before = pipeline_defs(llm_server)
    for partition in (first, second):
        materialize_with(before, instance, partition)
    assert llm_server.counters.chat_requests == 7
    assert stale_partitions(instance, before) == []  # same code version: nothing stale

    # The prompt is edited and its version bumped, as a commit would.
    monkeypatch.setattr(annotation, "PROMPT_VERSION", "annotate-v2")
    monkeypatch.setattr(openai_enricher, "PROMPT_VERSION", "annotate-v2")
    after = pipeline_defs(llm_server)

    stale = stale_partitions(instance, after)
    assert [s.partition for s in stale] == sorted([first, second])  # not `never`: never ran
    assert all(s.reason == "new code version: prompt annotate-v1 -> annotate-v2" for s in stale)

    llm_server.configure(llm_server.faults)  # count afresh
    reenriched, outcomes = reenrich_stale(instance, after)
    assert reenriched == stale
    assert [o.partition for o in outcomes] == sorted([first, second])
    assert all(o.success for o in outcomes)
    # Requests for the stale partitions' conversations only, once each: the cache, keyed
    # by the prompt version, answered none of them from the old prompt.
    sent = llm_server.counters.texts
    assert sum(sent.values()) == 7 and set(sent.values()) == {1}
    assert {text.split(":")[1].strip() for text in sent} == {"alpha", "beta"}
    for partition in (first, second):
        rows = pl.read_parquet(lake.layer_path("enriched", partition))
        versions = rows["enrichment"].struct.field("prompt_version").unique().to_list()
        assert versions == ["annotate-v2"]
    assert not lake.layer_path("enriched", never).exists()
    assert stale_partitions(instance, after) == []


def test_enrich_run_stale_after_a_model_change_sends_requests_for_those_partitions_only(
    tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "ENRICH_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(home),
        "ENRICH_ENRICHER": "openai",
        "ENRICH_LLM_BASE_URL": llm_server.base_url,
        "ENRICH_LLM_API_KEY": "sk-test-cli",
        "ENRICH_LLM_MODEL": "gpt-4o-mini",
    }
    enrich = str(Path(sys.executable).parent / "enrich")

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [enrich, *args], env={**env, **extra}, capture_output=True, text=True, timeout=180
        )

    done = cli("run", "--no-summaries", str(batch(tmp_path, "alpha", 5)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert llm_server.counters.models == {"gpt-4o-mini": 5}

    again = cli("run", "--stale", ENRICH_LLM_MODEL="gpt-4o")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "model gpt-4o-mini -> gpt-4o" in again.stdout
    assert "re-enriched 1 stale partition(s)" in again.stdout
    assert llm_server.counters.models == {"gpt-4o-mini": 5, "gpt-4o": 5}
