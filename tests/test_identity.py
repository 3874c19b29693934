"""One identity per conversation across the lake: duplicates, id conflicts and versions.

Real files, real DuckDB, a real Dagster instance: each test lands batches and runs the
pipeline the way `enrich run` does, then reads the exports and statuses.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import orjson
import polars as pl
import psycopg
from dagster import DagsterInstance, materialize

from enrichment_assets.cli.runner import land_files, materialize_partitions
from enrichment_assets.defs.conversations.jobs import LAYER_ASSETS
from enrichment_assets.defs.resources import LLMResource
from enrichment_assets.lake import Lake
from enrichment_assets.low_confidence import LowConfidenceRule
from enrichment_assets.queries import conversation_status, layer_counts
from enrichment_assets.status import read_status
from tests.factories import conversation, message, read_jsonl, write_jsonl
from tests.llm_fixtures import layer_resources
from tests.llm_server import LoopbackLLMServer
from tests.postgres import requires_postgres


def run(lake: Lake, instance: DagsterInstance, files: list[Path]) -> list[str]:
    keys = land_files(lake, instance, files)
    outcomes = materialize_partitions(instance, keys)
    assert all(o.success for o in outcomes), outcomes
    return keys


def exported_ids(lake: Lake, kind: str = "enriched") -> Counter[str]:
    """How many times each conversation id appears across every partition's export file."""
    ids: Counter[str] = Counter()
    for path in sorted((lake.data_dir / "export" / kind).glob("*.jsonl")):
        for line in read_jsonl(path):
            ids[line["conversation_id"]] += 1
    return ids


def exported_texts(lake: Lake) -> dict[str, str]:
    """conversation id -> the first user message of its exported document."""
    texts = {}
    for path in sorted((lake.data_dir / "export" / "enriched").glob("*.jsonl")):
        for line in read_jsonl(path):
            texts[line["conversation_id"]] = next(
                m["content"] for m in line["messages"] if m["role"] == "user"
            )
    return texts


def openai_dialog(i: int, answer: str = "Here is how") -> dict:
    """A dialog in OpenAI chat format: no id, so the id derives from its content."""
    return {
        "messages": [
            {"role": "user", "content": f"Question number {i}: how do I fix my router?"},
            {"role": "assistant", "content": f"{answer}: restart it, then check cable {i}."},
        ]
    }


def test_a_corpus_with_word_for_word_repeats_exports_each_dialog_once(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    distinct = [openai_dialog(i) for i in range(60)]
    # A sixth of the corpus repeats earlier dialogs word for word (FAQ copies).
    repeats = [distinct[i % 7] for i in range(12)]
    corpus = write_jsonl(tmp_path / "faq.jsonl", [*distinct[:30], *repeats, *distinct[30:]])

    (partition,) = run(lake, instance, [corpus])

    assert exported_ids(lake) == Counter({cid: 1 for cid in exported_ids(lake)})
    assert len(exported_ids(lake)) == 60
    assert len(read_jsonl(lake.export_path("training", partition))) == 60
    counts = layer_counts(lake)["total"]
    assert counts["raw"] == 72 and counts["validated"] == 60 and counts["duplicates"] == 12
    assert counts["raw"] == counts["validated"] + counts["quarantined"]
    statuses = read_status(lake, partition)
    assert statuses.filter(pl.col("status") == "duplicate").height == 12
    assert statuses.filter(pl.col("status") == "completed").height == 60


def test_repeats_and_conflicts_in_a_batch_are_set_aside_with_the_record_kept(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    first = conversation()
    exact_repeat = dict(first)
    other_content = conversation(
        conversation_id=first["conversation_id"],
        messages=[message("user", "A different question"), message("assistant", "Different.")],
    )
    source = write_jsonl(
        tmp_path / "batch.jsonl", [first, conversation(), exact_repeat, other_content]
    )

    (partition,) = run(lake, instance, [source])

    quarantine = read_jsonl(lake.export_path("quarantine", partition))
    assert [(q["position"], q["validation_errors"][0]["rule"]) for q in quarantine] == [
        (3, "duplicate"),
        (4, "id_conflict"),
    ]
    for line in quarantine:
        assert line["kept"] == {
            "partition": partition,
            "record_index": 0,
            "source_file": str(source),
            "position": 1,
        }
    assert exported_ids(lake)[first["conversation_id"]] == 1
    (doc,) = [
        d
        for d in read_jsonl(lake.export_path("enriched", partition))
        if d["conversation_id"] == first["conversation_id"]
    ]
    assert doc["messages"][1]["content"] == first["messages"][1]["content"]

    shown = conversation_status(lake, first["conversation_id"])
    assert shown is not None and shown["status"] == "completed" and shown["record_index"] == 0
    assert {(s["record_index"], s["status"]) for s in shown["set_aside"]} == {
        (2, "duplicate"),
        (3, "id_conflict"),
    }
    assert all("record 0" in s["reason"] for s in shown["set_aside"])


def test_same_bytes_under_another_name_export_nothing_twice(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    records = [conversation() for _ in range(8)]
    source = write_jsonl(tmp_path / "x.jsonl", records)
    copy = tmp_path / "y.jsonl"
    shutil.copy(source, copy)

    run(lake, instance, [source])
    before = exported_ids(lake)
    run(lake, instance, [copy])

    assert exported_ids(lake) == before
    assert set(before.values()) == {1} and len(before) == 8


def test_an_edited_file_replaces_only_the_changed_conversations_everywhere(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    records = [conversation() for _ in range(10)]
    original = write_jsonl(tmp_path / "x.jsonl", records)
    (old,) = run(lake, instance, [original])
    edited_records = [dict(r) for r in records]
    for i in (2, 5):
        edited_records[i]["messages"] = [
            message("user", f"Edited question {i}"),
            message("assistant", f"Edited answer {i}"),
        ]
    edited = write_jsonl(tmp_path / "x-fixed.jsonl", edited_records)

    (new,) = run(lake, instance, [edited])

    assert set(exported_ids(lake).values()) == {1} and len(exported_ids(lake)) == 10
    for partition in (old, new):  # the training lines follow the enriched ones, one for one
        assert len(read_jsonl(lake.export_path("training", partition))) == len(
            read_jsonl(lake.export_path("enriched", partition))
        )
    texts = exported_texts(lake)
    assert texts[records[2]["conversation_id"]] == "Edited question 2"
    assert texts[records[5]["conversation_id"]] == "Edited question 5"
    assert len(read_jsonl(lake.export_path("enriched", new))) == 2
    assert len(read_jsonl(lake.export_path("enriched", old))) == 8
    old_statuses = dict(read_status(lake, old).select("record_index", "status").iter_rows())
    assert old_statuses[2] == "superseded" and old_statuses[5] == "superseded"
    new_statuses = Counter(read_status(lake, new)["status"].to_list())
    assert new_statuses == Counter({"duplicate": 8, "completed": 2})

    history = conversation_status(lake, records[2]["conversation_id"])
    assert history is not None and history["partition"] == new
    assert [(v["partition"], v["current"]) for v in history["versions"]] == [
        (old, False),
        (new, True),
    ]
    assert history["versions"][0]["content_hash"] != history["versions"][1]["content_hash"]


def test_rematerializing_the_older_partition_never_brings_an_old_version_back(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    records = [conversation() for _ in range(6)]
    (old,) = run(lake, instance, [write_jsonl(tmp_path / "x.jsonl", records)])
    edited = [dict(r) for r in records]
    edited[0]["messages"] = [message("user", "Newer question"), message("assistant", "Newer.")]
    (new,) = run(lake, instance, [write_jsonl(tmp_path / "x2.jsonl", edited)])
    exports_before = {p: lake.export_path("enriched", p).read_bytes() for p in (old, new)}

    # As the UI's "Materialize" of the old partition does: the job, the partition, a run.
    (again,) = materialize_partitions(instance, [old])
    assert again.success

    assert exported_texts(lake)[records[0]["conversation_id"]] == "Newer question"
    assert set(exported_ids(lake).values()) == {1}
    assert {p: lake.export_path("enriched", p).read_bytes() for p in (old, new)} == exports_before
    quarantine = read_jsonl(lake.export_path("quarantine", old))
    assert [q["validation_errors"][0]["rule"] for q in quarantine] == ["superseded"]
    assert quarantine[0]["kept"]["partition"] == new


def test_partitions_materialized_out_of_landing_order_keep_the_newest_version(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    records = [conversation() for _ in range(4)]
    edited = [dict(r) for r in records]
    edited[1]["messages"] = [message("user", "Second version"), message("assistant", "Yes.")]
    old, new = land_files(
        lake,
        instance,
        [write_jsonl(tmp_path / "a.jsonl", records), write_jsonl(tmp_path / "b.jsonl", edited)],
    )

    # The newer batch runs first (a backfill in another order, a retry): the older one
    # must then set its older version aside, not bring it back.
    assert all(o.success for o in materialize_partitions(instance, [new, old]))

    assert set(exported_ids(lake).values()) == {1} and len(exported_ids(lake)) == 4
    assert exported_texts(lake)[records[1]["conversation_id"]] == "Second version"


def test_only_new_content_is_sent_to_the_llm(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, llm_server: LoopbackLLMServer
) -> None:
    enricher = LLMResource(
        enricher="openai", base_url=llm_server.base_url, api_key="sk-test", max_attempts=2
    )

    def materialize_all(keys: list[str]) -> None:
        for key in keys:
            result = materialize(
                LAYER_ASSETS,
                partition_key=key,
                instance=instance,
                resources=layer_resources(enricher),
                raise_on_error=False,
            )
            assert result.success

    def chat_requests() -> int:
        return llm_server.counters.requests["POST /v1/chat/completions"]

    records = [
        conversation(messages=[message("user", f"Question {i}?"), message("assistant", f"A{i}.")])
        for i in range(12)
    ]
    original = write_jsonl(tmp_path / "x.jsonl", records)
    materialize_all(land_files(lake, instance, [original]))
    assert chat_requests() == 12

    copy = tmp_path / "copy-of-x.jsonl"
    shutil.copy(original, copy)
    materialize_all(land_files(lake, instance, [copy]))
    assert chat_requests() == 12  # nothing new: nothing sent

    edited = [dict(r) for r in records]
    for i in (0, 7, 9):
        edited[i]["messages"] = [message("user", f"New text {i}"), message("assistant", "Ok.")]
    materialize_all(land_files(lake, instance, [write_jsonl(tmp_path / "x3.jsonl", edited)]))
    assert chat_requests() == 15  # the three edited conversations only
    assert set(exported_ids(lake).values()) == {1} and len(exported_ids(lake)) == 12


def test_daily_summaries_count_each_conversation_once_in_its_current_version(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    from enrichment_assets.summary_windows import register_normalized, summary_connection

    records = [conversation(user_id="user-a") for _ in range(3)]
    run(lake, instance, [write_jsonl(tmp_path / "a.jsonl", records)])
    edited = [dict(r) for r in records]
    edited[0]["messages"] = [
        message("user", "Changed", timestamp="2024-06-01T10:00:00Z"),
        message("assistant", "Changed too", timestamp="2024-06-01T10:00:05Z"),
    ]
    run(lake, instance, [write_jsonl(tmp_path / "b.jsonl", edited)])

    con = summary_connection()
    register_normalized(con, lake.layer_glob("normalized"))
    rows = con.sql(
        "SELECT conversation_id, count(*) FROM normalized_conversations GROUP BY ALL"
    ).fetchall()
    contents = con.sql(
        "SELECT content FROM summary_messages WHERE conversation_id = ? ORDER BY ordinal",
        params=[records[0]["conversation_id"]],
    ).fetchall()
    con.close()
    assert sorted(n for _, n in rows) == [1, 1, 1]
    assert [c for (c,) in contents] == ["Changed", "Changed too"]


def test_the_report_counts_duplicates_and_never_as_pending_work(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    from enrichment_assets.health_metrics import pipeline_health

    records = [conversation() for _ in range(5)]
    run(lake, instance, [write_jsonl(tmp_path / "a.jsonl", [*records, records[0], records[1]])])

    health = pipeline_health(lake, low_confidence=LowConfidenceRule.from_env())
    assert health["metrics"]["backlog"] == 0
    assert health["metrics"]["completeness_rate"] == 100.0
    assert health["metrics"]["per_status"]["duplicate"] == 2
    assert health["levels"]["export_mismatches"] == "ok"
    assert orjson.loads(orjson.dumps(health))["overall"] == "ok"


@requires_postgres
def test_in_production_the_index_lives_in_the_application_database(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, app_db: str
) -> None:
    records = [conversation() for _ in range(5)]
    (old,) = run(lake, instance, [write_jsonl(tmp_path / "x.jsonl", [*records, records[3]])])
    edited = [dict(r) for r in records]
    edited[4]["messages"] = [message("user", "Fixed question"), message("assistant", "Fixed.")]
    (new,) = run(lake, instance, [write_jsonl(tmp_path / "x2.jsonl", edited)])

    assert not (lake.data_dir / "lake" / "identity").exists()
    with psycopg.connect(app_db) as conn:
        versions = conn.execute(
            "SELECT partition, count(*) FROM conversation_versions GROUP BY partition"
        ).fetchall()
        statuses = dict(
            conn.execute(
                "SELECT status, count(*) FROM conversation_status GROUP BY status"
            ).fetchall()
        )
    assert dict(versions) == {old: 5, new: 5}
    assert statuses == {"completed": 5, "duplicate": 5, "superseded": 1}
    assert set(exported_ids(lake).values()) == {1} and len(exported_ids(lake)) == 5
    assert exported_texts(lake)[records[4]["conversation_id"]] == "Fixed question"
    shown = conversation_status(lake, records[4]["conversation_id"], app_db)
    assert shown is not None and shown["partition"] == new
    assert [v["current"] for v in shown["versions"]] == [False, True]
