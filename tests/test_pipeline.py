"""The four layers end to end on a real Dagster instance, real DuckDB and real files."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
from dagster import DagsterInstance

from enrichment_assets.cli.runner import PartitionOutcome, land_files, materialize_partitions
from enrichment_assets.exports import receipt_lines
from enrichment_assets.lake import Lake
from enrichment_assets.queries import conversation_status, layer_counts
from enrichment_assets.status import read_status
from tests.factories import conversation, message, read_jsonl, write_jsonl

ENRICHED_KEYS = [
    "conversation_id",
    "user_id",
    "template_id",
    "persona_id",
    "emotional_arc_id",
    "training_topic_id",
    "tier",
    "created_at",
    "messages",
    "metadata",
    "stats",
    "enrichment",
    "status",
]


def run_files(lake: Lake, instance: DagsterInstance, files: list[Path]) -> list[PartitionOutcome]:
    return materialize_partitions(instance, land_files(lake, instance, files))


def mixed_batch(path: Path) -> Path:
    return write_jsonl(
        path,
        [
            *(conversation() for _ in range(5)),
            conversation(messages=[message("user", "is anyone there?")]),
            '{"conversation_id": "broken", "messages": [',
        ],
    )


def test_every_record_lands_in_exactly_one_place(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    (outcome,) = run_files(lake, instance, [mixed_batch(tmp_path / "in" / "batch.jsonl")])
    assert outcome.success, outcome
    counts = layer_counts(lake)[outcome.partition]
    assert counts == {
        "raw": 7,
        "validated": 5,
        "quarantined": 2,
        "enriched": 5,
        "normalized": 5,
        "completed": 5,
        "duplicates": 0,
        "superseded": 0,
    }


def test_conservation_checks_pass_and_are_recorded(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    (outcome,) = run_files(lake, instance, [mixed_batch(tmp_path / "batch.jsonl")])
    assert outcome.success and outcome.failed_checks == []
    run = instance.get_run_by_id(outcome.run_id)
    assert run is not None
    records = instance.get_records_for_run(outcome.run_id).records
    evaluations = {
        r.event_log_entry.dagster_event.event_specific_data.check_name: (
            r.event_log_entry.dagster_event.event_specific_data.passed
        )
        for r in records
        if r.event_log_entry.dagster_event
        and r.event_log_entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert evaluations["raw_rows_conserved"] is True
    assert evaluations["validated_rows_conserved"] is True
    assert evaluations["enriched_rows_conserved"] is True


def test_writes_the_three_exports_in_the_contract_shape(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    (outcome,) = run_files(lake, instance, [mixed_batch(tmp_path / "batch.jsonl")])
    p = outcome.partition

    enriched = read_jsonl(lake.export_path("enriched", p))
    assert len(enriched) == 5
    for doc in enriched:
        assert list(doc) == ENRICHED_KEYS
        assert doc["status"] == "completed"
        assert doc["enrichment"]["enricher"] == "heuristic"
        assert 0.0 <= doc["enrichment"]["confidence"] <= 1.0
        assert 0.0 <= doc["enrichment"]["quality_score"] <= 100.0
        assert doc["metadata"]["persona"]["persona_id"] == "persona-anxious-student"
        assert doc["stats"]["user_messages"] == 2 and doc["stats"]["assistant_messages"] == 2
        assert doc["stats"]["duration_seconds"] == 80
        assert doc["created_at"] == "2024-06-01T10:00:00Z"
        assert doc["messages"][1]["timestamp"] == "2024-06-01T10:00:00Z"

    training = read_jsonl(lake.export_path("training", p))
    assert len(training) == 5
    assert all(list(line) == ["messages"] for line in training)
    assert all(list(m) == ["role", "content"] for line in training for m in line["messages"])

    quarantine = read_jsonl(lake.export_path("quarantine", p))
    assert [q["position"] for q in quarantine] == [6, 7]
    assert quarantine[0]["validation_errors"] == [
        {"rule": "missing_assistant_message", "path": "$.messages", "value": None}
    ]
    assert quarantine[1]["validation_errors"][0]["rule"] == "invalid_json"
    assert quarantine[1]["raw_text"].startswith('{"conversation_id": "broken"')


def test_rematerializing_a_partition_gives_byte_identical_exports(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    (first,) = run_files(lake, instance, [mixed_batch(tmp_path / "batch.jsonl")])
    before = {
        k: lake.export_path(k, first.partition).read_bytes()
        for k in ("enriched", "training", "quarantine")
    }
    (second,) = materialize_partitions(instance, [first.partition])
    assert second.success and second.run_id != first.run_id
    after = {k: lake.export_path(k, first.partition).read_bytes() for k in before}
    assert after == before


def test_rematerializing_reads_the_frozen_input_even_if_the_original_changed(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    source = mixed_batch(tmp_path / "batch.jsonl")
    (first,) = run_files(lake, instance, [source])
    before = lake.export_path("enriched", first.partition).read_bytes()
    source.write_text("this is not json anymore\n")
    (second,) = materialize_partitions(instance, [first.partition])
    assert second.success
    assert lake.export_path("enriched", first.partition).read_bytes() == before
    source.unlink()
    (third,) = materialize_partitions(instance, [first.partition])
    assert third.success
    assert lake.export_path("enriched", first.partition).read_bytes() == before


def test_registering_the_same_content_twice_names_the_same_partition(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    source = mixed_batch(tmp_path / "a" / "batch.jsonl")
    copy = tmp_path / "b" / "batch.jsonl"
    copy.parent.mkdir()
    shutil.copy(source, copy)
    keys = land_files(lake, instance, [source, copy])
    assert keys[0] == keys[1]
    assert "," not in keys[0]
    assert instance.get_dynamic_partitions("batches") == [keys[0]]


def test_keeps_a_status_per_record_through_the_lifecycle(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    (outcome,) = run_files(lake, instance, [mixed_batch(tmp_path / "batch.jsonl")])
    statuses = read_status(lake, outcome.partition).sort("record_index")
    assert statuses["status"].to_list() == ["completed"] * 5 + ["validation_failed"] * 2
    completed = statuses.filter(pl.col("status") == "completed")
    assert completed["enriched_at"].null_count() == 0
    assert completed["raw_stored_at"].null_count() == 0
    assert (completed["enriched_at"] >= completed["raw_stored_at"]).all()
    failed = statuses.filter(pl.col("status") == "validation_failed")
    assert failed["last_error"].to_list() == ["missing_assistant_message", "invalid_json"]


def test_status_of_one_conversation_carries_its_documents(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    good, bad = conversation(), conversation(tier="gold")
    run_files(lake, instance, [write_jsonl(tmp_path / "two.jsonl", [good, bad])])

    found = conversation_status(lake, good["conversation_id"])
    assert found is not None and found["status"] == "completed"
    assert found["raw"]["conversation_id"] == good["conversation_id"]
    assert found["enriched"]["enrichment"]["enricher"] == "heuristic"
    assert found["validation_errors"] == []

    rejected = conversation_status(lake, bad["conversation_id"])
    assert rejected is not None and rejected["status"] == "validation_failed"
    assert rejected["validation_errors"] == [
        {"rule": "not_in_allowed_set", "path": "$.tier", "value": "gold"}
    ]
    assert rejected["enriched"] is None
    assert conversation_status(lake, "00000000-0000-4000-8000-000000000000") is None


def test_repairs_mojibake_and_leaves_correct_text_alone_in_exports(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    record = conversation(
        messages=[
            message("user", "I donâ€™t get it, the cafÃ© app crashes ‚Üí help"),
            message(
                "assistant", "Pas de souci 😀 — «\u00a0café\u00a0» 你好，世界！ naïve “quotes” → ok"
            ),
        ]
    )
    (outcome,) = run_files(lake, instance, [write_jsonl(tmp_path / "m.jsonl", [record])])
    (doc,) = read_jsonl(lake.export_path("enriched", outcome.partition))
    assert doc["messages"][0]["content"] == "I don’t get it, the café app crashes → help"
    assert doc["messages"][1]["content"] == record["messages"][1]["content"]


def test_an_empty_batch_runs_and_writes_no_empty_export_file(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "only-bad.jsonl", [conversation(tier="gold")])
    (outcome,) = run_files(lake, instance, [source])
    assert outcome.success
    # No completed conversation: no enriched nor training file, and the receipt says 0 lines.
    for kind in ("enriched", "training"):
        assert not lake.export_path(kind, outcome.partition).exists()
        assert receipt_lines(lake, outcome.partition, kind) == 0
    assert len(read_jsonl(lake.export_path("quarantine", outcome.partition))) == 1
