"""The openai enricher inside the Dagster pipeline, against the loopback server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from enrichment_assets.cli.runner import land_files
from enrichment_assets.defs.conversations.jobs import LAYER_ASSETS
from enrichment_assets.defs.resources import LLMResource
from enrichment_assets.lake import Lake
from enrichment_assets.status import status_counts
from tests.factories import conversation, message, read_jsonl, write_jsonl
from tests.llm_fixtures import layer_resources
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
        resources=layer_resources(enricher),
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
    assert llm_server.counters.chat_requests == 4 * 2

    # The rerun: each failed in its previous run, so it gets one attempt, no retries.
    assert run_partition(lake, instance, partition, llm(llm_server, max_attempts=2))
    assert llm_server.counters.chat_requests == 4 * 2 + 4
    docs = read_jsonl(lake.export_path("enriched", partition))
    assert all("gave up after 1 attempt: " in d["enrichment"]["error"] for d in docs), docs


def marked_batch_file(tmp_path: Path, count: int, marked: dict[int, str]) -> Path:
    """`count` conversations of 10 users on one day; conversation i's question holds marked[i]."""
    records = [
        conversation(
            user_id=f"user-{i % 10:02d}",
            messages=[
                message(
                    "user",
                    f"How do I reset password number {i}? {marked.get(i, '')}".strip(),
                    timestamp="2024-06-01T10:00:00Z",
                ),
                message(
                    "assistant",
                    f"Open settings and follow step {i}.",
                    timestamp="2024-06-01T10:00:30Z",
                ),
            ],
        )
        for i in range(count)
    ]
    return write_jsonl(tmp_path / "batch.jsonl", records)


def by_marker(docs: list[dict], marked: dict[int, str]) -> tuple[list[dict], dict[str, dict]]:
    """(the unmarked documents, {marker: its document})."""
    faulty: dict[str, dict] = {}
    good = []
    for doc in docs:
        user_text = next(m["content"] for m in doc["messages"] if m["role"] == "user")
        marker = next((m for m in marked.values() if m in user_text), None)
        if marker is None:
            good.append(doc)
        else:
            faulty[marker] = doc
    return good, faulty


# One conversation per fault; "reset_once" heals on its retry, the others stay NULL.
EVERY_FAULT = {
    "choices_null": "malformed answer",
    "usage_list": "malformed answer",
    "confidence_true": "confidence",
    "label_unknown": "label",
    "summary_long": "over the 2,000-character cap",
    "status_500": "Error code: 500",
    "status_401": "Incorrect API key provided",
    "drip": "deadline",
    "redirect": "redirect to another origin refused",
    "body_huge_unsized": "byte cap",
    "reset_once": None,
}


def test_enrich_run_against_every_fault_completes_the_good_ones_and_leaks_no_key(
    tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    """Issue 16's acceptance, small: one conversation per fault in a batch of 40, through
    `enrich run` (every layer and the daily summaries) with a key that does not look like
    one, against a server that echoes it."""
    key = "Zq9/ECHOED+key=not-like-sk~"  # whatever its shape, the echo must not land
    marked = {3 * n + 1: f"FAULT-{kind.upper()}" for n, kind in enumerate(EVERY_FAULT)}
    data_dir, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    source = marked_batch_file(tmp_path, 40, marked)
    with LoopbackLLMServer() as elsewhere:
        llm_server.configure(
            Faults(
                targeted={f"FAULT-{kind.upper()}": kind for kind in EVERY_FAULT},
                drip_interval_s=0.3,
                huge_body_bytes=20 * 1024 * 1024,
                redirect_to=elsewhere.base_url + "/chat/completions",
            )
        )
        env = {
            **os.environ,
            "ENRICH_DATA_DIR": str(data_dir),
            "DAGSTER_HOME": str(home),
            "ENRICH_ENRICHER": "openai",
            "ENRICH_LLM_BASE_URL": llm_server.base_url,
            "ENRICH_LLM_API_KEY": key,
            "ENRICH_LLM_TIMEOUT_S": "1",
            "ENRICH_LLM_MAX_ATTEMPTS": "3",
            "ENRICH_LLM_RETRY_BUDGET_S": "1",
        }
        env.pop("OPENAI_API_KEY", None)
        started = time.monotonic()
        done = subprocess.run(
            [str(Path(sys.executable).parent / "enrich"), "run", str(source)],
            env=env,
            capture_output=True,
            check=False,
            timeout=240,
        )
        elapsed = time.monotonic() - started
        assert sum(elsewhere.counters.requests.values()) == 0

    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert elapsed < 180  # the drip alone would hold the run for minutes
    docs = [
        doc
        for export in (data_dir / "export" / "enriched").glob("*.jsonl")
        for doc in read_jsonl(export)
    ]
    good, faulty = by_marker(docs, marked)
    assert len(good) + len(faulty) == 40 and len(faulty) == len(EVERY_FAULT)
    assert all(d["enrichment"]["error"] is None and d["enrichment"]["label"] for d in good)
    for kind, expected in EVERY_FAULT.items():
        enrichment = faulty[f"FAULT-{kind.upper()}"]["enrichment"]
        if expected is None:
            assert enrichment["error"] is None and enrichment["summary"], kind
        else:
            assert expected in (enrichment["error"] or ""), (kind, enrichment["error"])
            assert enrichment["summary"] is None and enrichment["confidence"] is None, kind
    assert llm_server.counters.paid_twice() == []
    # Issue 16's crash left every conversation `enrichment_in_progress`: now all complete.
    (status_file,) = (data_dir / "lake" / "status").glob("*.parquet")
    statuses = status_counts(pl.read_parquet(status_file))
    assert statuses["completed"] == 40 and statuses["enrichment_in_progress"] == 0
    assert f"Bearer {key}" in llm_server.counters.authorization  # it was sent, and echoed...

    # ...and is nowhere: not in the data folder, the event log or the compute logs.
    compute_logs = [p for p in home.rglob("*") if p.suffix in (".out", ".err", ".complete")]
    assert compute_logs, sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    files = [p for folder in (data_dir, home) for p in folder.rglob("*") if p.is_file()]
    for path in files:
        assert key.encode() not in path.read_bytes(), path
        if path.suffix == ".parquet":  # compressed pages: read what they hold, too
            assert key not in pl.read_parquet(path).write_ndjson(), path
    assert key.encode() not in done.stdout + done.stderr
    with DagsterInstance.from_config(str(home)) as recorded:
        runs = recorded.get_runs()
        assert runs
        for run in runs:
            for record in recorded.get_records_for_run(run.run_id, limit=100_000).records:
                assert key not in str(record.event_log_entry)
