"""What the Dagster UI shows an operator, read from a real instance after real `enrich run`s.

One data folder and one instance for the module: `enrich run` of a clean and a mixed
batch (in this process, as the console script runs), the mixed batch's gate then failed
on purpose (an enricher that returns a confidence of 1.7), an automation evaluation, and
a second `enrich run` that brings a day earlier than any before. The tests read what the
UI reads: the instance's check records per partition, materialization metadata, asset
kinds and tags, dynamic partitions, and the files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    RunRequest,
    SkipReason,
    build_schedule_context,
    evaluate_automation_conditions,
    instance_for_test,
    materialize,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from enrichment_assets.cli.commands import main
from enrichment_assets.definitions import defs
from enrichment_assets.defs.conversations.jobs import LAYER_ASSETS
from enrichment_assets.defs.conversations.partitions import is_summary_day, summary_days
from enrichment_assets.defs.resources import LakeResource, LLMResource
from enrichment_assets.defs.summaries.automation import summaries_daily
from enrichment_assets.exports import receipt_path, verify_exports
from enrichment_assets.health_metrics import THRESHOLDS, pipeline_health
from enrichment_assets.lake import Lake
from enrichment_assets.low_confidence import LowConfidenceRule
from tests.factories import conversation, message, write_jsonl

PROJECT = Path(__file__).resolve().parents[1]
LAYERS = [a.key.to_user_string() for a in LAYER_ASSETS]
EARLY_DAY = "2024-05-20"


def enrich_in_process(*args: str) -> int:
    """`enrich ARGS...` in this process, as the console script runs it; the exit code."""
    argv, sys.argv = sys.argv, ["enrich", *args]
    try:
        main()
        return 0
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = argv


class Overconfident:
    """The configured enricher with a bug: confidence 1.7 on the first conversation."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name

    def annotate(self, conversations: pl.DataFrame) -> pl.DataFrame:
        return self.inner.annotate(conversations).with_columns(
            pl.when(pl.int_range(pl.len()) == 0)
            .then(pl.lit(1.7))
            .otherwise(pl.col("confidence"))
            .alias("confidence")
        )


class OverconfidentLLM(LLMResource):
    def build_enricher(self, *args, **kwargs):
        return Overconfident(super().build_enricher(*args, **kwargs))


def on_day(day: str) -> dict:
    """A valid conversation whose messages fall on `day`."""
    return conversation(
        created_at=f"{day}T09:00:00Z",
        messages=[
            message("user", "My order has not arrived yet.", timestamp=f"{day}T09:00:00Z"),
            message("assistant", "Let me check the tracking.", timestamp=f"{day}T09:00:20Z"),
        ],
    )


@dataclass
class Operated:
    lake: Lake
    instance: DagsterInstance
    clean: str
    mixed: str
    early: str
    exit_codes: list[int]
    days_after_first_run: list[str]
    health_requested_after_gate_failure: int


@pytest.fixture(scope="module")
def operated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operated]:
    root = tmp_path_factory.mktemp("operator-view")
    with pytest.MonkeyPatch.context() as patch, instance_for_test() as instance:
        patch.setenv("ENRICH_DATA_DIR", str(root / "data"))
        for name in ("ENRICH_LANDING_DIR", "ENRICH_ENRICHER", "ENRICH_APP_DB_URL"):
            patch.delenv(name, raising=False)
        patch.setenv("ENRICH_WORKERS", "1")
        lake = Lake(root / "data")
        clean = write_jsonl(root / "in" / "clean.jsonl", [conversation() for _ in range(3)])
        mixed = write_jsonl(
            root / "in" / "mixed.jsonl",
            [conversation(), conversation(), conversation(tier="gold")],
        )
        codes = [enrich_in_process("run", str(clean), str(mixed))]
        batches = instance.get_dynamic_partitions("batches")
        clean_key = next(b for b in batches if b.startswith("clean"))
        mixed_key = next(b for b in batches if b.startswith("mixed"))
        days_after_first = sorted(instance.get_dynamic_partitions(summary_days.name))

        # The automation's view before and after a layer run of one partition, whose
        # enriched gate fails.
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        broken = materialize(
            LAYER_ASSETS,
            partition_key=mixed_key,
            instance=instance,
            resources={**defs.resources, "enricher": OverconfidentLLM()},
            raise_on_error=False,
        )
        assert not broken.success or any(not e.passed for e in broken.get_asset_check_evaluations())
        second = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        requested = second.get_num_requested(AssetKey("pipeline_health"))

        early = write_jsonl(root / "in" / "early.jsonl", [on_day(EARLY_DAY)])
        # Without its summaries: the daily schedule finds the day (see its test).
        codes.append(enrich_in_process("run", "--no-summaries", str(early)))
        early_key = next(
            b for b in instance.get_dynamic_partitions("batches") if b.startswith("early")
        )
        yield Operated(
            lake,
            instance,
            clean_key,
            mixed_key,
            early_key,
            codes,
            days_after_first,
            requested,
        )


def check_key(asset: str, check: str) -> AssetCheckKey:
    return AssetCheckKey(AssetKey(asset), check)


def layer_check_keys() -> list[AssetCheckKey]:
    return [
        key
        for asset in LAYER_ASSETS
        for key in asset.check_keys  # every check declared on a layer asset
    ]


def test_enrich_run_exits_zero_for_a_batch_with_quarantined_records(operated: Operated) -> None:
    assert operated.exit_codes == [0, 0]


def test_every_layer_check_result_is_recorded_against_its_partition(
    operated: Operated,
) -> None:
    storage = operated.instance.event_log_storage
    keys = layer_check_keys()
    assert len(keys) == 13  # 2 GX gates per layer, 5 conservation / export / reference checks
    infos = storage.get_asset_check_partition_info(keys)
    by_key: dict[AssetCheckKey, set[str | None]] = {}
    for info in infos:
        by_key.setdefault(info.check_key, set()).add(info.partition_key)
    expected = {operated.clean, operated.mixed, operated.early}
    for key in keys:
        assert by_key.get(key) == expected, key
        for record in storage.get_asset_check_execution_history(key, limit=20):
            assert record.partition in expected, (key, record.partition)


def test_a_failed_gate_shows_on_its_partition_row_and_in_its_history(
    operated: Operated,
) -> None:
    storage = operated.instance.event_log_storage
    gate = check_key("enriched_conversations", "gx_contract")
    latest = {
        info.partition_key: info.latest_execution_status
        for info in storage.get_asset_check_partition_info([gate])
    }
    assert latest[operated.mixed] == AssetCheckExecutionRecordStatus.FAILED
    assert latest[operated.clean] == AssetCheckExecutionRecordStatus.SUCCEEDED
    history = [
        (r.partition, r.status) for r in storage.get_asset_check_execution_history(gate, limit=20)
    ]
    mixed_history = [status for partition, status in history if partition == operated.mixed]
    assert mixed_history == [
        AssetCheckExecutionRecordStatus.FAILED,  # newest first
        AssetCheckExecutionRecordStatus.SUCCEEDED,
    ]
    assert [s for p, s in history if p == operated.clean] == [
        AssetCheckExecutionRecordStatus.SUCCEEDED
    ]


def test_enrich_run_materializes_pipeline_health_and_evaluates_its_checks(
    operated: Operated,
) -> None:
    instance = operated.instance
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("pipeline_health")), limit=10
    ).records
    assert len(records) == 2  # one per `enrich run`
    storage = instance.event_log_storage
    for threshold in THRESHOLDS:
        history = storage.get_asset_check_execution_history(
            check_key("pipeline_health", threshold.metric), limit=10
        )
        assert len(history) == 2, threshold.metric
        assert all(
            r.status
            in (AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED)
            for r in history
        )
    levels = records[0].asset_materialization.metadata["levels"].value
    assert (
        levels
        == pipeline_health(operated.lake, low_confidence=LowConfidenceRule.from_env())["levels"]
    )


def test_automation_requests_pipeline_health_after_a_layer_run(operated: Operated) -> None:
    assert operated.health_requested_after_gate_failure == 1


def test_every_layer_materialization_carries_row_count_and_column_schema(
    operated: Operated,
) -> None:
    lake, instance = operated.lake, operated.instance
    layer_of = {
        "raw_conversations": "raw",
        "validated_conversations": "validated",
        "enriched_conversations": "enriched",
        "normalized_conversations": "normalized",
    }
    for asset, layer in layer_of.items():
        for partition in (operated.clean, operated.early):
            (record,) = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]),
                limit=1,
            ).records
            metadata = record.asset_materialization.metadata
            path = lake.layer_path(layer, partition)
            assert metadata["dagster/row_count"].value == pq.ParquetFile(path).metadata.num_rows
            columns = [c.name for c in metadata["dagster/column_schema"].value.columns]
            assert columns == pq.read_schema(path).names, asset
            assert "rows" not in metadata
    (summary,) = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("conversation_summaries")), limit=1
    ).records
    assert "dagster/column_schema" in summary.asset_materialization.metadata


def test_kinds_and_tags_follow_the_configured_enricher(operated: Operated) -> None:
    enriched = defs.resolve_assets_def("enriched_conversations").specs_by_key[
        AssetKey("enriched_conversations")
    ]
    assert "heuristic" in enriched.kinds and "openai" not in enriched.kinds
    assert enriched.tags["enrich/enricher"] == "heuristic"

    # The same definitions loaded with the openai enricher configured.
    probe = (
        "from dagster import AssetKey\n"
        "from enrichment_assets.definitions import defs\n"
        "for name in ('enriched_conversations', 'conversation_summaries'):\n"
        "    spec = defs.resolve_assets_def(name).specs_by_key[AssetKey(name)]\n"
        "    print(name, sorted(spec.kinds), spec.tags.get('enrich/enricher'))\n"
    )
    env = {
        **os.environ,
        "ENRICH_ENRICHER": "openai",
        "ENRICH_LLM_BASE_URL": "http://127.0.0.1:9/v1",
    }
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "enriched_conversations ['duckdb', 'openai', 'parquet'] openai" in done.stdout
    assert "conversation_summaries ['duckdb', 'openai', 'parquet'] openai" in done.stdout


def test_enrich_run_creates_the_landing_folder(operated: Operated) -> None:
    assert operated.lake.landing_dir.is_dir()


def test_no_empty_export_file_and_receipts_still_verify(operated: Operated) -> None:
    lake = operated.lake
    assert not lake.export_path("quarantine", operated.clean).exists()
    receipt = receipt_path(lake, operated.clean).read_text()
    assert '"quarantine": {\n    "lines": 0,\n    "bytes": 0' in receipt
    assert lake.export_path("quarantine", operated.mixed).read_bytes().count(b"\n") == 1
    # The training dataset is one release whose files are always the same set (train,
    # validation, provenance; a small release may have an empty validation split): the
    # per-partition and per-day exports are the ones never written empty.
    exports = sorted(
        p
        for p in (lake.data_dir / "export").rglob("*.jsonl")
        if "dataset" not in p.relative_to(lake.data_dir / "export").parts
    )
    # 2024-06-01 was summarized with no user-window of 5 messages: no summaries file either.
    (summary,) = operated.instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=AssetKey("conversation_summaries"), asset_partitions=["2024-06-01"]
        ),
        limit=1,
    ).records
    assert summary.asset_materialization.metadata["dagster/row_count"].value == 0
    assert not (lake.data_dir / "export" / "summaries" / "2024-06-01.jsonl").exists()
    assert exports and all(path.stat().st_size > 0 for path in exports)
    # Asked for, the partition's quarantine is there, and empty.
    out = lake.data_dir.parent / "clean-quarantine.jsonl"
    assert (
        enrich_in_process(
            "export", "--what", "quarantine", "--partition", operated.clean, "--out", str(out)
        )
        == 0
    )
    assert out.read_bytes() == b""
    # Receipts and files agree where a partition's statuses are final (the mixed one's
    # gate was failed on purpose after its exports).
    assert verify_exports(lake, {operated.clean: 3, operated.early: 1}) == []


def test_summary_days_are_the_days_with_data_and_an_earlier_day_extends_them(
    operated: Operated,
) -> None:
    instance = operated.instance
    assert operated.days_after_first_run == ["2024-06-01"]
    assert instance.get_dynamic_partitions(summary_days.name) == ["2024-06-01"]

    def schedule_at(moment: datetime) -> RunRequest | SkipReason:
        with build_schedule_context(
            instance=instance, scheduled_execution_time=moment, resources={"lake": LakeResource()}
        ) as context:
            return summaries_daily(context)

    # 00:15 UTC after a day without messages: nothing to run, no partition.
    skipped = schedule_at(datetime(2024, 6, 3, 0, 15, tzinfo=UTC))
    assert isinstance(skipped, SkipReason) and "2024-06-02" in str(skipped.skip_message)
    # After the early batch's day: registered (before every other day) and requested.
    request = schedule_at(datetime(2024, 5, 21, 0, 15, tzinfo=UTC))
    assert isinstance(request, RunRequest) and request.partition_key == EARLY_DAY
    assert sorted(instance.get_dynamic_partitions(summary_days.name)) == [EARLY_DAY, "2024-06-01"]


def test_summaries_start_date_bounds_the_summary_days(monkeypatch: pytest.MonkeyPatch) -> None:
    today = date(2024, 6, 10)
    assert is_summary_day("2024-01-01", today) and not is_summary_day("2024-06-10", today)
    monkeypatch.setenv("ENRICH_SUMMARIES_START_DATE", "2024-06-01")
    assert not is_summary_day("2024-05-31", today) and is_summary_day("2024-06-01", today)
    assert not is_summary_day("not-a-day", today)
    assert is_summary_day(str(date(2024, 6, 9)), today)
