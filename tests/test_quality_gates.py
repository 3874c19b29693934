"""GX quality gates on real Dagster instances, real GX suites and real layer files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterInstance,
    Definitions,
    define_asset_job,
    materialize,
)

from enrichment_assets.checks.gate_frame import gate_frame
from enrichment_assets.checks.gx_context import suite_names
from enrichment_assets.cli.runner import land_files, materialize_partitions
from enrichment_assets.definitions import defs
from enrichment_assets.defs.checks import validate_layer
from enrichment_assets.defs.conversations.jobs import LAYER_ASSETS
from enrichment_assets.defs.conversations.partitions import batch_partitions
from enrichment_assets.defs.resources import LLMResource
from enrichment_assets.lake import Lake
from enrichment_assets.status import read_status
from tests.factories import conversation, message, write_jsonl

# Unicode category Zs.
SPACE_SEPARATORS = (
    " \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u202f\u205f\u3000"
)

LAYERS = [a.key.to_user_string() for a in LAYER_ASSETS]


def materialized(instance: DagsterInstance, asset: str, partition: str) -> bool:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return bool(records)


def check_evaluations(instance: DagsterInstance, run_id: str) -> dict[str, object]:
    """{'asset:check': evaluation} for every check evaluated in the run."""
    found = {}
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            found[f"{data.asset_key.to_user_string()}:{data.check_name}"] = data
    return found


def land(lake: Lake, instance: DagsterInstance, path: Path, records: list) -> str:
    (partition,) = land_files(lake, instance, [write_jsonl(path, records)])
    return partition


def test_clean_partition_passes_every_gate_and_writes_data_docs(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    partition = land(lake, instance, tmp_path / "clean.jsonl", [conversation() for _ in range(6)])
    (outcome,) = materialize_partitions(instance, [partition])
    assert outcome.success, outcome
    evaluations = check_evaluations(instance, outcome.run_id)
    for layer in LAYERS:
        assert evaluations[f"{layer}:gx_contract"].passed
        assert evaluations[f"{layer}:gx_drift"].passed
    contract = evaluations["validated_conversations:gx_contract"]
    assert contract.metadata["rows_evaluated"].value == 6
    docs_page = Path(contract.metadata["data_docs"].value)
    assert docs_page.is_file() and docs_page.is_relative_to(lake.reports_dir / "data_docs")
    index = (lake.reports_dir / "data_docs" / "index.html").read_text()
    for suite in suite_names():
        assert suite in index
    assert partition in index


def test_a_repeated_id_is_set_aside_and_the_uniqueness_gate_holds(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    twin = conversation()
    partition = land(lake, instance, tmp_path / "dup.jsonl", [twin, conversation(), twin])
    (outcome,) = materialize_partitions(instance, [partition])

    assert outcome.success, outcome
    evaluation = check_evaluations(instance, outcome.run_id)["validated_conversations:gx_contract"]
    assert evaluation.passed
    assert materialized(instance, "normalized_conversations", partition)
    statuses = read_status(lake, partition).sort("record_index")
    assert statuses["status"].to_list() == ["completed", "completed", "duplicate"]


def test_the_uniqueness_gate_still_blocks_a_duplicated_id_as_a_safety_net(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    partition = land(lake, instance, tmp_path / "ok.jsonl", [conversation(), conversation()])
    (outcome,) = materialize_partitions(instance, [partition])
    assert outcome.success
    # A layer file with one id twice, as a bug upstream of the gate would write it.
    layer = pl.read_parquet(lake.layer_path("validated", partition))
    broken = tmp_path / "validated-with-a-repeat.parquet"
    pl.concat([layer, layer.head(1)]).write_parquet(broken)

    report = validate_layer(lake, "validated_conversations", broken, partition)

    assert report.blocked_reason is not None
    assert "expect_column_values_to_be_unique" in report.blocked_reason
    (contract,) = [r for r in report.check_results if r.check_name == "gx_contract"]
    assert not contract.passed


class Overconfident:
    """Wraps the configured enricher with a bug: confidence 1.7 on the first conversation."""

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


def test_confidence_out_of_range_fails_the_enriched_gate(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    partition = land(lake, instance, tmp_path / "c.jsonl", [conversation() for _ in range(3)])
    result = materialize(
        LAYER_ASSETS,
        partition_key=partition,
        instance=instance,
        resources={**defs.resources, "enricher": OverconfidentLLM()},
        raise_on_error=False,
    )
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in failed] == [
        "enriched_conversations:gx_contract"
    ]
    values = [f["unexpected_values"] for f in failed[0].metadata["failures"].value]
    assert [1.7] in values
    assert materialized(instance, "enriched_conversations", partition)
    assert not materialized(instance, "normalized_conversations", partition)


def test_unknown_role_in_a_layer_file_fails_its_gate_and_rematerializing_clears_it(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    partition = land(lake, instance, tmp_path / "r.jsonl", [conversation() for _ in range(3)])

    def run(*assets: str):
        job = define_asset_job(
            "part", selection=AssetSelection.assets(*assets), partitions_def=batch_partitions
        )
        partial = Definitions(assets=LAYER_ASSETS, jobs=[job], resources=defs.resources)
        return partial.resolve_job_def("part").execute_in_process(
            partition_key=partition, instance=instance, raise_on_error=False
        )

    assert run("raw_conversations", "validated_conversations").success
    # Another writer corrupts the validated file: one message with a role outside the set.
    validated = lake.layer_path("validated", partition)
    frame = pl.read_parquet(validated)
    broken = frame.with_columns(
        pl.col("messages").list.eval(
            pl.element().struct.with_fields(
                pl.when(pl.int_range(pl.len()) == 1)
                .then(pl.lit("wizard"))
                .otherwise(pl.element().struct.field("role"))
                .alias("role")
            )
        )
    )
    broken.write_parquet(validated)

    blocked = run("enriched_conversations", "normalized_conversations")
    failed = [e for e in blocked.get_asset_check_evaluations() if not e.passed]
    assert {e.check_name for e in failed} == {"gx_contract"}
    roles = next(f for f in failed[0].metadata["failures"].value if f["column"] == "messages.roles")
    assert roles["unexpected_count"] == 3
    assert "wizard" in roles["unexpected_values"][0]
    assert not materialized(instance, "normalized_conversations", partition)

    (fixed,) = materialize_partitions(instance, [partition])
    assert fixed.success, fixed
    statuses = read_status(lake, partition)
    assert statuses["status"].to_list() == ["completed"] * 3
    assert statuses["last_error"].null_count() == 3


def test_quality_drift_warns_without_blocking(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    records = [conversation() for _ in range(4)] + ['{"broken": ', "not json either"]
    partition = land(lake, instance, tmp_path / "drift.jsonl", records)
    (outcome,) = materialize_partitions(instance, [partition])
    assert outcome.success, outcome
    drift = check_evaluations(instance, outcome.run_id)["raw_conversations:gx_drift"]
    assert not drift.passed and drift.severity.value == "WARN"
    columns = {f["column"] for f in drift.metadata["failures"].value}
    assert "parse_error" in columns
    assert materialized(instance, "normalized_conversations", partition)


def test_contract_gate_catches_an_empty_message_after_normalization(lake: Lake) -> None:
    """A completed conversation may not carry an empty message (direct suite run)."""
    path = lake.layer_path("normalized", "p1")
    path.parent.mkdir(parents=True)
    base = {
        "partition": "p1",
        "record_index": [0, 1],
        "conversation_id": [conversation()["conversation_id"], conversation()["conversation_id"]],
        "status": ["completed", "normalization_failed"],
    }
    at = datetime(2024, 6, 1, tzinfo=UTC)
    messages = [
        [message("user", "hi", timestamp=at), message("assistant", " ", timestamp=at)],
        [message("user", "hi", timestamp=at), message("assistant", "", timestamp=at)],
    ]
    pl.DataFrame({**base, "messages": messages}).write_parquet(path)
    report = validate_layer(lake, "normalized_conversations", path, "p1")
    assert report.blocked_reason is not None
    assert "messages.min_content_chars" in report.blocked_reason
    contract = report.check_results[0]
    failure = next(
        f
        for f in contract.metadata["failures"].value
        if f["column"] == "messages.min_content_chars"
    )
    assert failure["unexpected_count"] == 1  # the normalization_failed row is allowed


def test_min_content_chars_counts_characters_after_trim(tmp_path: Path) -> None:
    """The gate's fast path gives trim()'s length for every kind of space at either end."""
    texts = ["ab", " ab ", "\u3000ab", "ab\u00a0", "\u2009", "\tab\n", "é ", "😀", ""]
    path = tmp_path / "layer.parquet"
    pl.DataFrame(
        {"messages": [[{"role": "user", "content": text}] for text in texts]}
    ).write_parquet(path)
    frame = gate_frame(path, ["messages.min_content_chars"])
    # DuckDB's trim() strips the space separators (Zs), not tabs or newlines.
    expected = [len(t.strip("".join(SPACE_SEPARATORS))) for t in texts]
    assert frame["messages.min_content_chars"].tolist() == expected == [2, 2, 2, 2, 0, 4, 1, 1, 0]
