"""Issue 21, item 4: the Batch API mode submits, records and returns; a sensor applies.

Every scenario runs the real assets on a real Dagster instance against the loopback
server's `/v1/files` and `/v1/batches`, evaluates the real `llm_batches` sensor, and
counts what the server received: uploads, batches created, polls, downloads.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    SensorResult,
    build_sensor_context,
    materialize,
)
from dagster._core.instance.ref import InstanceRef

from enrichment_assets.cli.runner import land_files
from enrichment_assets.defs.automation.failed_partitions import (
    ATTEMPT_TAG,
    REASON_TAG,
    failed_partitions_tick,
)
from enrichment_assets.defs.automation.llm_batches import apply_request, llm_batches
from enrichment_assets.defs.automation.settings import RetrySettings
from enrichment_assets.defs.conversations.jobs import LAYER_ASSETS
from enrichment_assets.defs.resources import LakeResource, LLMResource
from enrichment_assets.enrichers.batch_ledger import (
    PartitionBatches,
    SubmittedBatch,
    read_batches,
    write_batches,
)
from enrichment_assets.enrichers.settings import DEFAULT_PRICES
from enrichment_assets.lake import Lake
from enrichment_assets.partition_retry import NULL_AI_FIELDS
from enrichment_assets.status import read_status
from tests.factories import read_jsonl
from tests.llm_fixtures import layer_resources
from tests.llm_server import Faults, LoopbackLLMServer
from tests.test_llm_spend import batch as batch_file
from tests.test_llm_spend import enriched_metadata, step_failure
from tests.test_llm_spend import llm as spend_llm
from tests.test_sensors import sensor_context

PRICE = DEFAULT_PRICES["gpt-4o-mini"]
ENRICHED = AssetKey("enriched_conversations")
NORMALIZED = AssetKey("normalized_conversations")
ENRICH = str(Path(sys.executable).with_name("enrich"))


def llm(server: LoopbackLLMServer, **overrides: object) -> LLMResource:
    """The `openai` enricher in the Batch API mode against `server`."""
    return spend_llm(server, **{"mode": "batch", **overrides})


def run(
    instance: DagsterInstance, partition: str, enricher: LLMResource, **request: object
) -> ExecuteInProcessResult:
    """A run of the layers (or of what a sensor's `request` selects, with its config/tags)."""
    return materialize(
        LAYER_ASSETS,
        partition_key=partition,
        instance=instance,
        resources=layer_resources(enricher),
        selection=request.get("asset_selection"),  # type: ignore[arg-type]
        run_config=request.get("run_config") or {},  # type: ignore[arg-type]
        tags=request.get("tags"),  # type: ignore[arg-type]
        raise_on_error=False,
    )


def tick(
    instance: DagsterInstance, enricher: LLMResource, cursor: str | None = None
) -> SensorResult:
    """One evaluation of the `llm_batches` sensor, as the daemon makes it."""
    with build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"lake": LakeResource(), "enricher": enricher},
    ) as context:
        result = llm_batches(context)
    assert isinstance(result, SensorResult)
    return result


def retry_requests(instance: DagsterInstance, lake: Lake) -> SensorResult:
    """A `failed_partitions` tick an hour from now (every backoff is over)."""
    with sensor_context(instance) as context:
        later = datetime.now(UTC) + timedelta(hours=1)
        return failed_partitions_tick(context, lake, RetrySettings(), now=later)


def latest_observation(instance: DagsterInstance, partition: str) -> dict[str, object]:
    (record,) = instance.fetch_observations(ENRICHED, limit=1).records
    observation = record.asset_observation
    assert observation is not None and observation.partition == partition
    return {key: value.value for key, value in observation.metadata.items()}


def enriched_docs(lake: Lake, partition: str) -> list[dict]:
    return read_jsonl(lake.export_path("enriched", partition))


def test_a_run_submits_and_ends_then_the_sensor_applies_completed_and_failed_lines(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    llm_server.configure(Faults(seed=5, batch_polls=1, batch_rate_error=0.3))
    (partition,) = land_files(lake, instance, [batch_file(tmp_path, "a", 12)])
    enricher = llm(llm_server)

    # The run uploads, creates the batch, records it and ends: no polling, no layer.
    assert run(instance, partition, enricher).success
    sent = llm_server.counters.requests
    assert sent["POST /v1/files"] == 1 and sent["POST /v1/batches"] == 1
    assert sent["GET /v1/batches/{id}"] == 0 and llm_server.counters.chat_requests == 0
    assert not lake.layer_path("enriched", partition).exists()
    assert not lake.layer_path("normalized", partition).exists()
    assert set(read_status(lake, partition)["status"]) == {"enrichment_in_progress"}
    record = read_batches(lake.data_dir, partition)
    assert record is not None and record.requests == 12 and len(record.batch_ids) == 1
    seen = latest_observation(instance, partition)
    assert seen["llm_batch_state"] == "submitted" and seen["llm_batch_ids"] == record.batch_ids
    assert seen["llm_batch_requests"] == 12 and float(seen["llm_estimated_cost_usd"]) > 0  # type: ignore[arg-type]
    # A partition whose batch is out is not unhealthy: no retry of it.
    assert not retry_requests(instance, lake).run_requests

    # The sensor polls: still running, nothing requested; then ended, one apply run.
    waiting = tick(instance, enricher)
    assert not waiting.run_requests and "1 partition(s) waiting" in str(waiting.skip_reason)
    ended = tick(instance, enricher, waiting.cursor)
    (request,) = ended.run_requests
    assert sent["GET /v1/batches/{id}"] == 2
    assert request.partition_key == partition and request.run_key == record.run_key()
    assert set(request.asset_selection or []) == {ENRICHED, NORMALIZED}

    assert run(instance, partition, enricher, **vars(request)).success
    docs = enriched_docs(lake, partition)
    failed = [d for d in docs if d["enrichment"]["error"]]
    assert len(docs) == 12 and 0 < len(failed) < 12
    for doc in failed:  # NULL plus the line's error, never a default
        assert "batch item failed with HTTP 500" in doc["enrichment"]["error"]
        assert doc["enrichment"]["summary"] is None and doc["enrichment"]["confidence"] is None
    assert all(d["enrichment"]["summary"] for d in docs if not d["enrichment"]["error"])
    assert set(read_status(lake, partition)["status"]) == {"completed"}
    assert read_batches(lake.data_dir, partition) is None
    assert sent["POST /v1/batches"] == 1 and llm_server.counters.chat_requests == 0
    assert not llm_server.counters.paid_twice()

    # The cost is the batch's: half the online price of the tokens the lines reported.
    meta = enriched_metadata(instance, partition)
    prompt, completion = int(meta["llm_prompt_tokens"]), int(meta["llm_completion_tokens"])  # type: ignore[arg-type]
    assert prompt > 0 and meta["llm_batch_price_factor"] == 0.5
    assert float(meta["llm_cost_usd"]) == pytest.approx(0.5 * PRICE.cost(prompt, completion))  # type: ignore[arg-type]
    assert float(meta["llm_estimated_cost_usd"]) > 0  # type: ignore[arg-type]
    assert meta["llm_batch_failed"] == len(failed) and meta["llm_batch_ids"] == record.batch_ids

    # The failed lines are retried by failed_partitions; the retry submits those only.
    (retry,) = retry_requests(instance, lake).run_requests
    assert retry.tags[REASON_TAG] == NULL_AI_FIELDS
    assert run(instance, partition, enricher, tags=retry.tags).success
    again = read_batches(lake.data_dir, partition)
    assert again is not None and again.requests == len(failed)
    assert sent["POST /v1/batches"] == 2 and not llm_server.counters.paid_twice()
    # Its apply run carries the try it answers: the retry count goes on across batches.
    assert apply_request(again).tags[ATTEMPT_TAG] == retry.tags[ATTEMPT_TAG] == "1"


def test_expired_and_failed_batches_leave_their_conversations_null_with_the_reason(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    """Applied by the run the sensor would request (its layers only)."""
    llm_server.configure(Faults(batch_polls=0))
    expiring, failing = land_files(
        lake, instance, [batch_file(tmp_path, "a", 8), batch_file(tmp_path, "b", 8, "passcode")]
    )
    enricher = llm(llm_server)
    apply = {"asset_selection": [ENRICHED, NORMALIZED]}
    assert run(instance, expiring, enricher).success
    out = read_batches(lake.data_dir, expiring)
    assert out is not None and out.estimate_usd
    # A batch out counts against the daily limit at its estimate until it is applied:
    # a second one that the limit would not cover besides it is refused, nothing sent.
    tight = llm(llm_server, daily_budget_usd=1.5 * out.estimate_usd)
    assert not run(instance, failing, tight).success
    assert "over budget: estimated $" in step_failure(instance)
    assert llm_server.counters.requests["POST /v1/files"] == 1
    assert run(instance, failing, enricher, **apply).success
    assert llm_server.counters.requests["POST /v1/batches"] == 2

    llm_server.configure(Faults(batch_polls=0, batch_end="expired"), keep_counters=True)
    assert run(instance, expiring, enricher, **apply).success
    docs = enriched_docs(lake, expiring)
    lost = [d for d in docs if d["enrichment"]["error"]]
    assert len(docs) == 8 and 0 < len(lost) < 8
    assert all("(status expired)" in d["enrichment"]["error"] for d in lost)
    assert all(d["enrichment"]["label"] is None for d in lost)

    llm_server.configure(Faults(batch_polls=0, batch_end="failed"), keep_counters=True)
    assert run(instance, failing, enricher, **apply).success
    docs = enriched_docs(lake, failing)
    assert len(docs) == 8
    assert all("the input file was rejected" in d["enrichment"]["error"] for d in docs)
    assert all(d["enrichment"]["confidence"] is None for d in docs)
    assert llm_server.counters.requests["POST /v1/batches"] == 2  # neither was submitted again
    assert read_batches(lake.data_dir, expiring) is None
    assert read_batches(lake.data_dir, failing) is None


def enrich_process(data_dir: Path, home: Path, server: LoopbackLLMServer, *args: str, **env: str):
    """`enrich ARGS` in its own process, in batch mode against `server`."""
    return subprocess.run(
        [ENRICH, *args],
        env={
            **{k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
            "ENRICH_DATA_DIR": str(data_dir),
            "DAGSTER_HOME": str(home),
            "GX_ANALYTICS_ENABLED": "false",
            "ENRICH_ENRICHER": "openai",
            "ENRICH_LLM_MODE": "batch",
            "ENRICH_LLM_BASE_URL": server.base_url,
            "ENRICH_LLM_API_KEY": "sk-test-spend",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_a_process_killed_after_creating_its_batch_is_resumed_without_submitting_again(
    tmp_path: Path, llm_server: LoopbackLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    source = batch_file(tmp_path, "a", 10)
    llm_server.configure(Faults(batch_polls=100))

    # Killed (SIGKILL) between creating the batch and recording its id.
    killed = enrich_process(
        data_dir,
        home,
        llm_server,
        "run",
        "--no-dataset",
        "--no-summaries",
        str(source),
        ENRICH_TEST_CRASH_AT="llm_batch_created",
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert llm_server.counters.requests["POST /v1/batches"] == 1
    lake = Lake(data_dir)
    (partition,) = lake.registered_batches()
    record = read_batches(data_dir, partition)
    assert record is not None and record.batch_ids == []  # created, never recorded

    # The next run finds the batch by its metadata instead of paying for it again.
    resumed = enrich_process(
        data_dir, home, llm_server, "run", "--no-dataset", "--no-summaries", str(source)
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "10 conversation(s) submitted to the Batch API" in resumed.stdout
    assert "llm_batches sensor" in resumed.stdout
    sent = llm_server.counters.requests
    assert sent["POST /v1/batches"] == 1 and sent["POST /v1/files"] == 1
    assert sent["GET /v1/batches"] == 1
    record = read_batches(data_dir, partition)
    assert record is not None and len(record.batch_ids) == 1

    # The batch ends; the sensor's apply run (in this process, same instance) applies it.
    llm_server.configure(Faults(batch_polls=0), keep_counters=True)
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data_dir))
    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    try:
        enricher = llm(llm_server)
        (request,) = tick(instance, enricher).run_requests
        assert run(instance, partition, enricher, **vars(request)).success
    finally:
        instance.dispose()
    docs = enriched_docs(lake, partition)
    assert len(docs) == 10 and all(d["enrichment"]["label"] for d in docs)
    assert sent["POST /v1/batches"] == 1 and sent["POST /v1/files"] == 1
    assert llm_server.counters.chat_requests == 0
    assert sum(llm_server.counters.successes.values()) == 10
    assert not llm_server.counters.paid_twice()


def test_the_sensor_waits_out_an_unreachable_endpoint(
    lake: Lake, instance: DagsterInstance, llm_server: LoopbackLLMServer
) -> None:
    """A tick that cannot reach the endpoint is a warning and a wait, never a failed tick."""
    record = PartitionBatches(
        partition="p-1",
        submission="s-1",
        submitted_at=datetime.now(UTC).timestamp(),
        run_id="r-1",
        batches=[
            SubmittedBatch(
                part=0,
                model="gpt-4o-mini",
                prompt_version="v",
                keys={"c": "k"},
                batch_id="batch_gone",
                status="in_progress",
            )
        ],
    )
    write_batches(lake.data_dir, record)
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = llm(llm_server, base_url=f"http://127.0.0.1:{port}/v1", max_attempts=1)

    result = tick(instance, down)

    assert not result.run_requests and "1 partition(s) waiting" in str(result.skip_reason)
    assert read_batches(lake.data_dir, "p-1") == record  # the sensor writes nothing
