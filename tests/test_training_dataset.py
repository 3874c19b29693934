"""`training_dataset` end to end: real batches through the layers, then the dataset asset.

One lake (three batches: JSON Lines, a JSON array, OpenAI-format lines without ids) is built
once for the module; each test reads it or builds a named release of its own from it.
"""

from __future__ import annotations

import copy
import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl
import pytest
from dagster import (
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    evaluate_automation_conditions,
    instance_for_test,
)

from enrichment_assets.cli.dataset_run import DatasetOutcome, materialize_training_dataset
from enrichment_assets.cli.runner import land_files, materialize_partitions
from enrichment_assets.dataset.build import DatasetSpec, stage_dataset
from enrichment_assets.dataset.publish import dataset_dir, publish_dataset
from enrichment_assets.lake import Lake, write_bytes_atomic
from enrichment_assets.sample_data import generate_conversations, to_openai
from enrichment_assets.sample_pii import planted_conversations
from enrichment_assets.text import repair_text
from tests.factories import conversation, message, read_jsonl, write_jsonl

FILES = ("train.jsonl", "validation.jsonl", "provenance.jsonl", "manifest.json")


def new_id(tag: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"training-dataset-test/{tag}"))


def exact_copy(record: dict, tag: str, *, restyled: bool = False) -> dict:
    """The same conversation under another id; `restyled`: other case and spacing."""
    twin = copy.deepcopy(record)
    twin["conversation_id"] = new_id(tag)
    if restyled:
        for message in twin["messages"]:
            message["content"] = message["content"].upper().replace(" ", "  ")
    return twin


def near_copy(record: dict, tag: str, rng: random.Random, words: int = 3) -> dict:
    """The same conversation under another id with `words` words changed."""
    twin = copy.deepcopy(record)
    twin["conversation_id"] = new_id(tag)
    message = max(twin["messages"], key=lambda m: len(m["content"]))
    tokens = message["content"].split(" ")
    for index in rng.sample(range(len(tokens)), words):
        tokens[index] = rng.choice(("banana", "quantum", "velvet", "harbour"))
    message["content"] = " ".join(tokens)
    return twin


def terse(question: str, answer: str) -> dict:
    return conversation(
        conversation_id=new_id(question),
        messages=[message("user", question), message("assistant", answer)],
    )


@dataclass
class Corpus:
    lake: Lake
    instance: DagsterInstance
    partitions: list[str]  # in landing order
    runs: dict[str, str]  # partition -> the run that materialized its layers
    originals: set[str]  # conversation ids the dataset must keep (first of each cluster)
    exact_copies: int
    near_copies: int
    planted: list[str]  # PII values planted in the third batch
    default: DatasetOutcome


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("dataset")
    with pytest.MonkeyPatch.context() as env, instance_for_test() as instance:
        env.setenv("ENRICH_DATA_DIR", str(root / "data"))
        for name in ("ENRICH_LANDING_DIR", "ENRICH_ENRICHER", "ENRICH_PII_MODE"):
            env.delenv(name, raising=False)
        lake = Lake(root / "data")
        rng = random.Random(3)
        base = list(generate_conversations(36, seed=21, defect_rate=0.0, mojibake_rate=0.0))
        # Two conversations too short for the heuristic to find any topic.
        base += [terse("Hi!", "Ok."), terse("Yo.", "Hm.")]
        first, second = base[:28], base[28:]
        pii = planted_conversations(6, seed=5)
        # Batch a: originals, exact and near copies of some of them, and conversations in the
        # OpenAI format (no ids: derived from the content) with planted PII.
        batch_a = [
            *first,
            *(exact_copy(first[i], f"a-exact-{i}") for i in range(3)),
            *(near_copy(first[3 + i], f"a-near-{i}", rng) for i in range(3)),
            *(to_openai(record) for record, _ in pii),
        ]
        # Batch b (a JSON array, landed later): copies of batch a's originals (other case and
        # spacing count as the same content), new originals, and a copy of one of those.
        batch_b = [
            *(exact_copy(first[6 + i], f"b-exact-{i}", restyled=True) for i in range(2)),
            *(near_copy(first[8 + i], f"b-near-{i}", rng) for i in range(2)),
            *second,
            exact_copy(second[0], "b-exact-own"),
        ]
        paths = [write_jsonl(root / "in" / "a-first.jsonl", batch_a), root / "in" / "b-second.json"]
        paths[1].write_bytes(orjson.dumps(batch_b))
        partitions = land_files(lake, instance, paths)
        outcomes = materialize_partitions(instance, partitions)
        assert all(o.success for o in outcomes), outcomes
        default = materialize_training_dataset(instance)
        assert default.success, default
        yield Corpus(
            lake=lake,
            instance=instance,
            partitions=partitions,
            runs={o.partition: o.run_id for o in outcomes},
            originals={r["conversation_id"] for r in base},
            exact_copies=6,
            near_copies=5,
            planted=[value.text for _, values in pii for value in values],
            default=default,
        )


def dataset_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


def lines_of(folder: Path) -> list[tuple[dict, dict]]:
    """(chat line, provenance entry) pairs, through the provenance's alignment."""
    chat = read_jsonl(folder / "train.jsonl") + read_jsonl(folder / "validation.jsonl")
    provenance = read_jsonl(folder / "provenance.jsonl")
    assert len(chat) == len(provenance)
    return list(zip(chat, provenance, strict=True))


def test_keeps_one_conversation_of_each_duplicate_cluster_and_counts_what_it_removed(
    corpus: Corpus,
) -> None:
    folder = corpus.default.folder
    assert folder is not None
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    counts = manifest["counts"]
    originals = len(corpus.originals) + 6  # and the OpenAI-format ones, all distinct
    assert counts["completed"] == originals + corpus.exact_copies + corpus.near_copies
    assert counts["removed"] == {
        "below_min_quality_score": 0,
        "below_min_confidence": 0,
        "missing_annotations": 0,
        "exact_duplicate": corpus.exact_copies,
        "near_duplicate": corpus.near_copies,
    }
    assert counts["kept"] == originals == counts["train"] + counts["validation"]
    assert corpus.default.counts == counts

    pairs = lines_of(folder)
    kept_ids = {entry["conversation_id"] for _, entry in pairs}
    assert corpus.originals <= kept_ids  # the first of every cluster stays
    assert len(kept_ids) == len(pairs) == originals
    for name in ("train.jsonl", "validation.jsonl", "provenance.jsonl"):
        content = (folder / name).read_bytes()
        assert manifest["files"][name] == {
            "lines": content.count(b"\n"),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    assert manifest["partitions"] == sorted(corpus.partitions)
    assert manifest["versions"]["libraries"]["rensa"]
    assert {s["enricher"] for s in manifest["versions"]["annotations"]} == {"heuristic"}


def test_every_line_resolves_through_its_provenance_to_its_source_bytes(corpus: Corpus) -> None:
    folder = corpus.default.folder
    assert folder is not None
    landed = {
        hashlib.sha256(path.read_bytes()).hexdigest(): path
        for path in (corpus.lake.data_dir / "lake" / "landing_store").glob("*/files/*")
    }
    enriched = enriched_documents(corpus.lake)
    for chat, entry in lines_of(folder):
        source = landed[entry["source_sha256"]]  # a landed file with exactly those bytes
        assert source == corpus.lake.data_dir / entry["landing_file"]
        record_bytes = record_at(source, entry["position"])
        assert hashlib.sha256(record_bytes).hexdigest() == entry["record_sha256"]
        record = orjson.loads(record_bytes)
        if "conversation_id" in record:
            assert record["conversation_id"] == entry["conversation_id"]
        # The dataset holds the text as the normalized layer repaired it.
        messages = [
            {"role": m["role"], "content": repair_text(m["content"])} for m in record["messages"]
        ]
        assert chat == {"messages": messages}
        assert entry["run_id"] == corpus.runs[entry["partition"]]
        enrichment = enriched[entry["conversation_id"]]
        assert (entry["enricher"], entry["model"], entry["prompt_version"]) == (
            enrichment["enricher"],
            enrichment["model"],
            enrichment["prompt_version"],
        )


def enriched_documents(lake: Lake) -> dict[str, dict]:
    """conversation id -> `enrichment` of the per-partition enriched exports."""
    return {
        d["conversation_id"]: d["enrichment"]
        for path in (lake.data_dir / "export" / "enriched").glob("*.jsonl")
        for d in read_jsonl(path)
    }


def record_at(path: Path, position: int) -> bytes:
    """The bytes of record `position` (1-based) of a landed file: a line of JSON Lines, or
    an element of a JSON array (as the raw layer serializes it)."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"["):
        return orjson.dumps(orjson.loads(data)[position - 1])
    return data.split(b"\n")[position - 1].rstrip(b"\r")


def test_unchanged_input_leaves_every_file_byte_for_byte_and_a_new_batch_updates_them(
    corpus: Corpus,
) -> None:
    folder = corpus.default.folder
    assert folder is not None
    before = dataset_files(folder)
    stats = {name: (folder / name).stat() for name in FILES}
    again = materialize_training_dataset(corpus.instance)
    assert again.success
    assert dataset_files(folder) == before
    for name in FILES:  # not rewritten at all: same inode, same modification time
        after = (folder / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stats[name].st_ino, stats[name].st_mtime_ns)
    assert latest_metadata(corpus.instance, again.run_id)["files_rewritten"].value == []

    # A release of batch a alone, then of both batches: the second batch changes the files.
    first = materialize_training_dataset(
        corpus.instance, name="r1", partitions=corpus.partitions[:1]
    )
    assert first.success and first.folder is not None and first.counts is not None
    alone = dataset_files(first.folder)
    grown = materialize_training_dataset(corpus.instance, name="r1", partitions=corpus.partitions)
    assert grown.success and grown.counts is not None
    assert grown.counts["kept"] > first.counts["kept"]
    both = dataset_files(first.folder)
    assert both["manifest.json"] != alone["manifest.json"]
    # Lines kept before keep their place in their split: batch b only adds lines after them.
    for name in ("train.jsonl", "validation.jsonl"):
        assert both[name].startswith(alone[name])


def test_unchanged_inputs_skip_the_work_and_a_rewritten_input_rebuilds_the_same_bytes(
    corpus: Corpus,
) -> None:
    name = "fingerprinted"
    built = materialize_training_dataset(corpus.instance, name=name)
    assert built.success and not built.unchanged and built.folder is not None
    folder, before = built.folder, dataset_files(built.folder)

    # The same inputs: the run skips the work, reporting the last build's figures and gate.
    again = materialize_training_dataset(corpus.instance, name=name)
    assert again.success and again.unchanged and again.failed_checks == []
    assert again.run_id != built.run_id and again.counts == built.counts
    metadata = latest_metadata(corpus.instance, again.run_id)
    assert metadata["unchanged_since_run"].value == built.run_id
    assert metadata["dagster/row_count"].value == built.counts["kept"]  # type: ignore[index]
    assert metadata["files_rewritten"].value == []
    # As `enrich run` asks: no run is launched at all.
    quick = materialize_training_dataset(corpus.instance, name=name, run_when_unchanged=False)
    assert quick.success and quick.unchanged and quick.run_id == built.run_id
    assert dataset_files(folder) == before

    # An input file rewritten with the same content: the work is done again, and publishes
    # the same bytes without rewriting any file.
    status = corpus.lake.layer_path("status", corpus.partitions[1])
    write_bytes_atomic(status, status.read_bytes())
    stats = {name: (folder / name).stat() for name in FILES}
    rebuilt = materialize_training_dataset(corpus.instance, name=name, run_when_unchanged=False)
    assert rebuilt.success and not rebuilt.unchanged and rebuilt.run_id != built.run_id
    assert dataset_files(folder) == before
    for file in FILES:
        after = (folder / file).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stats[file].st_ino, stats[file].st_mtime_ns)
    rebuilt_metadata = latest_metadata(corpus.instance, rebuilt.run_id)
    assert rebuilt_metadata["files_rewritten"].value == []
    # The same rows to compare: the last build's near-duplicate verdicts are reused.
    assert latest_metadata(corpus.instance, built.run_id)["near_duplicates_reused"].value is False
    assert rebuilt_metadata["near_duplicates_reused"].value is True

    # A published file edited by hand: the next build does the work and puts it back.
    (folder / "train.jsonl").write_bytes(b'{"messages": []}\n')
    restored = materialize_training_dataset(corpus.instance, name=name, run_when_unchanged=False)
    assert restored.success and not restored.unchanged
    assert dataset_files(folder) == before
    # Another setting is another input.
    reseeded = materialize_training_dataset(
        corpus.instance, name=name, config={"split_seed": "other"}, run_when_unchanged=False
    )
    assert reseeded.success and not reseeded.unchanged
    stricter = materialize_training_dataset(
        corpus.instance,
        name=name,
        config={"near_duplicate_threshold": 0.9},
        run_when_unchanged=False,
    )
    assert stricter.success and not stricter.unchanged
    assert (
        latest_metadata(corpus.instance, stricter.run_id)["near_duplicates_reused"].value is False
    )


def test_a_build_whose_inputs_changed_while_it_ran_publishes_nothing(
    corpus: Corpus, tmp_path: Path
) -> None:
    spec = DatasetSpec(name="raced")
    staged = stage_dataset(corpus.lake, spec, {}, tmp_path / "staged.parquet")
    stale = publish_dataset(corpus.lake, spec, staged, is_current=lambda: False)
    assert stale.stale and stale.changed == []
    folder = dataset_dir(corpus.lake, "raced")
    assert sorted(p.name for p in folder.iterdir()) == [".publish.lock"]  # no temporaries
    current = publish_dataset(corpus.lake, spec, staged, is_current=lambda: True)
    assert not current.stale and sorted(current.changed) == sorted(FILES)


def staged_lines(corpus: Corpus, tmp_path: Path, **settings: object) -> tuple[pl.DataFrame, dict]:
    """The dataset's lines for these settings, staged by the library (no Dagster run)."""
    staged = stage_dataset(corpus.lake, DatasetSpec(**settings), {}, tmp_path / "staged.parquet")
    assert staged.conserved
    return pl.read_parquet(staged.path), staged.counts


def test_the_split_follows_the_content_hash_whatever_else_the_dataset_holds(
    corpus: Corpus, tmp_path: Path
) -> None:
    everything, _ = staged_lines(corpus, tmp_path)
    only_b, _ = staged_lines(corpus, tmp_path, partitions=(corpus.partitions[1],))
    assert only_b.height > 0
    # Batch b's copies of batch a's conversations are kept here: their originals are not in.
    joined = only_b.join(everything, on="conversation_id", suffix="_all")
    assert joined.height >= only_b.height - 4 > 0
    assert (joined["split"] == joined["split_all"]).all()
    # Lines are numbered 1..n in each split, in dataset order.
    for frame in (everything, only_b):
        for _, group in frame.group_by("split"):
            assert group["line"].to_list() == list(range(1, group.height + 1))

    halves, counts = staged_lines(corpus, tmp_path, validation_fraction=0.5, split_seed="x")
    # About half in validation (40 lines: a binomial far inside these bounds).
    assert 8 <= counts["validation"] <= 32
    reseeded = halves.join(everything, on="conversation_id", suffix="_all")
    assert (reseeded["split"] != reseeded["split_all"]).any()
    again, _ = staged_lines(corpus, tmp_path, validation_fraction=0.5, split_seed="x")
    assert again.equals(halves)


def test_filters_remove_what_they_name_in_order_and_the_counts_add_up(
    corpus: Corpus, tmp_path: Path
) -> None:
    documents = enriched_documents(corpus.lake)
    scores = sorted(e["quality_score"] for e in documents.values())
    min_quality = scores[len(scores) // 3]
    passing = [e for e in documents.values() if e["quality_score"] >= min_quality]
    confidences = sorted(e["confidence"] for e in passing)
    min_confidence = confidences[len(confidences) // 4]
    lines, counts = staged_lines(
        corpus,
        tmp_path,
        min_quality_score=min_quality,
        min_confidence=min_confidence,
        required_annotations=("topics",),
    )
    expected_quality = sum(e["quality_score"] < min_quality for e in documents.values())
    expected_confidence = sum(e["confidence"] < min_confidence for e in passing)
    expected_topics = sum(not e["topics"] for e in passing if e["confidence"] >= min_confidence)
    assert counts["below_min_quality_score"] == expected_quality > 0
    assert counts["below_min_confidence"] == expected_confidence > 0
    assert counts["missing_annotations"] == expected_topics
    kept = [documents[i] for i in lines["conversation_id"]]
    assert kept and all(
        e["quality_score"] >= min_quality and e["confidence"] >= min_confidence and e["topics"]
        for e in kept
    )


def test_export_mode_redacts_the_lines_and_reports_counts_per_type(
    corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    default_text = b"".join(
        (corpus.default.folder / name).read_bytes()  # type: ignore[operator]
        for name in ("train.jsonl", "validation.jsonl")
    ).decode()
    # egress (the default) redacts what is sent to an LLM only: the outputs keep the text.
    assert all(value in default_text for value in corpus.planted)

    monkeypatch.setenv("ENRICH_PII_MODE", "export")
    redacted = materialize_training_dataset(corpus.instance, name="redacted")
    assert redacted.success and redacted.folder is not None
    text = b"".join(
        (redacted.folder / name).read_bytes() for name in ("train.jsonl", "validation.jsonl")
    ).decode()
    leaked = [value for value in corpus.planted if value in text]
    assert not leaked
    pii = orjson.loads((redacted.folder / "manifest.json").read_bytes())["pii"]
    assert pii["mode"] == "export"
    assert sum(pii["redacted"].values()) >= len(corpus.planted)
    assert pii["redacted_conversations"] == 6
    metadata = latest_metadata(corpus.instance, redacted.run_id)
    assert metadata["pii_redacted"].value == pii["redacted"]
    assert metadata["pii_mode"].value == "export"
    # The provenance still lines up: same lines, same order, as the default dataset.
    assert (redacted.folder / "provenance.jsonl").read_bytes() == (
        corpus.default.folder / "provenance.jsonl"  # type: ignore[operator]
    ).read_bytes()


def latest_metadata(instance: DagsterInstance, run_id: str) -> dict:
    from dagster import AssetKey

    (record,) = [
        r
        for r in instance.fetch_materializations(AssetKey("training_dataset"), limit=20).records
        if r.run_id == run_id
    ]
    return record.asset_materialization.metadata  # type: ignore[union-attr]


def test_a_failed_gate_publishes_nothing_and_keeps_the_previous_files(corpus: Corpus) -> None:
    folder = corpus.default.folder
    assert folder is not None
    before = dataset_files(folder)
    partition = corpus.partitions[0]
    manifest = corpus.lake.manifest_path(partition)
    original = manifest.read_bytes()
    try:
        # The landing store no longer says where the batch's records come from.
        broken = orjson.loads(original)
        broken["files"][0]["source_path"] = "/somewhere/else.jsonl"
        manifest.write_bytes(orjson.dumps(broken))
        blocked = materialize_training_dataset(corpus.instance)
    finally:
        manifest.write_bytes(original)
    assert not blocked.success
    assert "training_dataset:gx_contract" in blocked.failed_checks
    assert dataset_files(folder) == before
    assert "source_sha256" in latest_metadata(corpus.instance, blocked.run_id)["withheld"].value


def test_bad_settings_fail_the_run_with_one_line_and_write_nothing(corpus: Corpus) -> None:
    outcome = materialize_training_dataset(corpus.instance, name="../escape")
    assert not outcome.success and outcome.folder is None
    assert outcome.error is not None and "\n" not in outcome.error
    assert "name='../escape'" in outcome.error
    assert not (corpus.lake.data_dir / "export" / "escape").exists()

    unknown = materialize_training_dataset(corpus.instance, name="x", partitions=["nope"])
    assert not unknown.success and unknown.error is not None
    assert "partitions without a normalized layer: nope" in unknown.error
    assert not (corpus.lake.data_dir / "export" / "dataset" / "x").exists()
    with pytest.raises(ValueError, match="required_annotations: unknown mood"):
        DatasetSpec(required_annotations=("mood",)).check()


def test_automation_requests_the_dataset_after_a_layer_update_and_not_again(
    corpus: Corpus,
) -> None:
    from enrichment_assets.definitions import defs

    with instance_for_test() as instance:
        instance.add_dynamic_partitions("batches", corpus.partitions)
        selection = AssetSelection.assets("training_dataset")

        def requested(cursor: object) -> tuple[int, object]:
            result = evaluate_automation_conditions(
                defs, instance, asset_selection=selection, cursor=cursor
            )
            return result.total_requested, result.cursor

        # The first tick only starts watching: nothing was updated since.
        count, cursor = requested(None)
        assert count == 0
        # A layer run updates a batch: requested once, not again on the next tick.
        report_normalized(instance, corpus.partitions[0])
        count, cursor = requested(cursor)
        assert count == 1
        count, cursor = requested(cursor)
        assert count == 0
        # The dataset's own materialization does not ask for another; the next batch does.
        assert materialize_training_dataset(instance, name="automated").success
        count, cursor = requested(cursor)
        assert count == 0
        report_normalized(instance, corpus.partitions[1])
        count, cursor = requested(cursor)
        assert count == 1


def report_normalized(instance: DagsterInstance, partition: str) -> None:
    """What a layer run leaves in the instance: a materialization of the partition."""
    instance.report_runless_asset_event(
        AssetMaterialization("normalized_conversations", partition=partition)
    )
