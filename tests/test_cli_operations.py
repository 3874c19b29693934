"""`enrich status`, `enrich bulk` and `enrich export` on real runs, DuckDB and files.

Commands run in-process through `enrichment_assets.cli.main` (argv in, exit code,
stdout and stderr out), and end to end through `uv run enrich` for the 1,000-id
bulk request. Every run goes into a real, temporary Dagster instance.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl
import pytest
from dagster import DagsterInstance, instance_for_test, materialize

from enrichment_assets.cli.runner import BULK_REQUEST_TAG, land_files, materialize_partitions
from enrichment_assets.defs.resources import LakeResource, LLMResource, PiiRedactionResource
from enrichment_assets.enrichers.heuristic import HeuristicEnricher
from enrichment_assets.lake import Lake
from enrichment_assets.status import read_status
from tests.cli import enrich
from tests.factories import conversation, read_jsonl, write_jsonl

PROJECT = Path(__file__).resolve().parents[1]
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def run_files(lake: Lake, instance: DagsterInstance, files: list[Path]) -> list[str]:
    partitions = land_files(lake, instance, files)
    assert all(o.success for o in materialize_partitions(instance, partitions))
    return partitions


@dataclass
class Landed:
    """A data folder with two materialized partitions, shared by read-only tests."""

    lake: Lake
    instance: DagsterInstance
    mixed: str  # 4 completed, 1 invalid (tier), 1 unparseable
    clean: str  # 3 completed
    good: list[dict]
    invalid: dict


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Landed]:
    root = tmp_path_factory.mktemp("operations")
    with pytest.MonkeyPatch.context() as patch, instance_for_test() as instance:
        patch.setenv("ENRICH_DATA_DIR", str(root / "data"))
        patch.delenv("ENRICH_LANDING_DIR", raising=False)
        patch.delenv("ENRICH_ENRICHER", raising=False)
        patch.delenv("ENRICH_APP_DB_URL", raising=False)
        lake = Lake(root / "data")
        good = [conversation() for _ in range(7)]
        invalid = conversation(tier="gold")
        mixed_file = write_jsonl(
            root / "in" / "mixed.jsonl", [*good[:4], invalid, '{"conversation_id": "broken", ']
        )
        clean_file = write_jsonl(root / "in" / "clean.jsonl", good[4:])
        mixed, clean = run_files(lake, instance, [mixed_file, clean_file])
        yield Landed(lake, instance, mixed, clean, good, invalid)


@pytest.fixture
def fresh(data_dir: Path, instance: DagsterInstance) -> tuple[Lake, DagsterInstance]:
    """A data folder and instance of this test's own, for commands that change data."""
    return Lake(data_dir), instance


# --- enrich status -----------------------------------------------------------------------


def test_status_json_has_the_contract_fields_and_documents(
    landed: Landed, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = landed.good[0]["conversation_id"]
    result = enrich(capsys, "status", cid, "--json")
    assert result.code == 0, result.stderr
    found = result.json()
    assert {"conversation_id", "status", "retry_count", "last_error", "validation_errors"} <= set(
        found
    )
    assert found["conversation_id"] == cid and found["status"] == "completed"
    assert found["retry_count"] == 0 and found["last_error"] is None
    assert found["raw"]["conversation_id"] == cid
    assert found["enriched"]["conversation_id"] == cid
    assert found["enriched"]["enrichment"]["enricher"] == "heuristic"


def test_status_of_a_quarantined_conversation_shows_its_validation_report(
    landed: Landed, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = landed.invalid["conversation_id"]
    found = enrich(capsys, "status", cid, "--json").json()
    assert found["status"] == "validation_failed"
    assert found["validation_errors"] == [
        {"rule": "not_in_allowed_set", "path": "$.tier", "value": "gold"}
    ]
    assert found["enriched"] is None

    readable = enrich(capsys, "status", cid)
    assert readable.code == 0
    assert "validation_failed" in readable.stdout
    assert "not_in_allowed_set at $.tier" in readable.stdout
    assert "raw document" in readable.stdout and '"gold"' in readable.stdout


def test_an_unknown_id_exits_1_with_one_line(
    landed: Landed, capsys: pytest.CaptureFixture[str]
) -> None:
    result = enrich(capsys, "status", UNKNOWN_ID)
    assert result.code == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"enrich: error: unknown conversation id '{UNKNOWN_ID}'"
    ]
    assert "Traceback" not in result.stderr


def test_status_listing_by_partition_counts_each_status(
    landed: Landed, capsys: pytest.CaptureFixture[str]
) -> None:
    result = enrich(capsys, "status", "--partition", landed.mixed, "--json")
    assert result.code == 0, result.stderr
    listing = result.json()
    assert listing["total"] == 6
    assert listing["counts"]["completed"] == 4
    assert listing["counts"]["validation_failed"] == 2
    assert [i["record_index"] for i in listing["items"]] == list(range(6))
    assert {i["partition"] for i in listing["items"]} == {landed.mixed}

    readable = enrich(capsys, "status", "--partition", landed.mixed)
    assert readable.code == 0
    assert "validation_failed" in readable.stdout and "rows 1-6 of 6" in readable.stdout


def test_status_listing_by_status_spans_partitions_and_pages(
    landed: Landed, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = enrich(capsys, "status", "--status", "validation_failed", "--json").json()
    assert failed["total"] == 2
    assert {i["last_error"] for i in failed["items"]} == {"not_in_allowed_set", "invalid_json"}

    first = enrich(capsys, "status", "--status", "completed", "--limit", "5", "--json").json()
    rest = enrich(
        capsys, "status", "--status", "completed", "--limit", "5", "--offset", "5", "--json"
    ).json()
    assert first["total"] == rest["total"] == 7
    assert len(first["items"]) == 5 and len(rest["items"]) == 2
    listed = {i["conversation_id"] for i in first["items"] + rest["items"]}
    assert listed == {c["conversation_id"] for c in landed.good}

    readable = enrich(capsys, "status", "--status", "completed", "--limit", "5")
    assert "more: --offset 5" in readable.stdout


def test_status_listing_refuses_an_unknown_status_or_partition(
    landed: Landed, capsys: pytest.CaptureFixture[str]
) -> None:
    usage = enrich(capsys, "status", "--status", "done")
    assert usage.code == 2 and "unknown status 'done'" in usage.stderr
    # Not a partition of the lake: a usage error (issue 17: no name reaches a path unchecked).
    unknown = enrich(capsys, "status", "--partition", "no-such-batch")
    assert unknown.code == 2
    assert unknown.stderr.strip().splitlines() == [
        "enrich: usage error: Invalid value: --partition 'no-such-batch': no such partition "
        "(see 'enrich status --help')"
    ]
    both = enrich(capsys, "status", UNKNOWN_ID, "--status", "completed")
    assert both.code == 2


# --- enrich export -----------------------------------------------------------------------


def test_exports_enriched_documents_as_jsonl_byte_for_byte(
    landed: Landed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "enriched.jsonl"
    result = enrich(capsys, "export", "--what", "enriched", "--format", "jsonl", "--out", str(out))
    assert result.code == 0, result.stderr
    assert "wrote 7 enriched document(s) from 2 partition(s)" in result.stdout
    expected = b"".join(
        landed.lake.export_path("enriched", p).read_bytes()
        for p in sorted([landed.mixed, landed.clean])
    )
    assert out.read_bytes() == expected
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind


def test_exports_one_json_file_per_conversation(
    landed: Landed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    result = enrich(
        capsys, "export", "--what", "enriched", "--format", "json", "--out", str(folder),
        "--partition", landed.clean,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    expected = {c["conversation_id"] for c in landed.good[4:]}
    assert {p.stem for p in folder.iterdir()} == expected
    for path in folder.iterdir():
        document = orjson.loads(path.read_bytes())
        assert document["conversation_id"] == path.stem
        assert document["status"] == "completed" and "enrichment" in document


@pytest.mark.parametrize("what", ["enriched", "training"])
def test_exports_chat_formats_openai_and_sharegpt(
    landed: Landed, capsys: pytest.CaptureFixture[str], tmp_path: Path, what: str
) -> None:
    openai, sharegpt = tmp_path / "openai.jsonl", tmp_path / "sharegpt.jsonl"
    for fmt, out in (("openai", openai), ("sharegpt", sharegpt)):
        result = enrich(capsys, "export", "--what", what, "--format", fmt, "--out", str(out))
        assert result.code == 0, result.stderr

    training = [
        line
        for p in sorted([landed.mixed, landed.clean])
        for line in read_jsonl(landed.lake.export_path("training", p))
    ]
    assert read_jsonl(openai) == training
    shared = read_jsonl(sharegpt)
    assert len(shared) == 7 and all(list(line) == ["conversations"] for line in shared)
    first = shared[0]["conversations"]
    assert [turn["from"] for turn in first] == ["system", "human", "gpt", "human", "gpt"]
    assert [turn["value"] for turn in first] == [m["content"] for m in training[0]["messages"]]


def test_exports_training_as_jsonl_and_json(
    landed: Landed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = tmp_path / "train.jsonl"
    assert enrich(capsys, "export", "--what", "training", "--out", str(lines)).code == 0
    assert all(list(line) == ["messages"] for line in read_jsonl(lines))
    assert len(read_jsonl(lines)) == 7
    folder = tmp_path / "train"
    result = enrich(
        capsys, "export", "--what", "training", "--format", "json", "--out", str(folder)
    )
    assert result.code == 0, result.stderr
    assert {p.stem for p in folder.iterdir()} == {c["conversation_id"] for c in landed.good}


def test_exports_quarantine_as_jsonl_and_json(
    landed: Landed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "rejected.jsonl"
    result = enrich(
        capsys, "export", "--what", "quarantine", "--out", str(out), "--status", "validation_failed"
    )
    assert result.code == 0, result.stderr
    rejected = read_jsonl(out)
    assert [r["validation_errors"][0]["rule"] for r in rejected] == [
        "not_in_allowed_set",
        "invalid_json",
    ]
    folder = tmp_path / "rejected"
    assert enrich(
        capsys, "export", "--what", "quarantine", "--format", "json", "--out", str(folder)
    ).code == 0  # fmt: skip
    names = sorted(p.name for p in folder.iterdir())
    assert f"{landed.invalid['conversation_id']}.json" in names and len(names) == 2


def test_exports_raw_records_filtered_by_status(
    landed: Landed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    everything = tmp_path / "raw.jsonl"
    assert enrich(capsys, "export", "--what", "raw", "--out", str(everything)).code == 0
    rows = read_jsonl(everything)
    assert len(rows) == 9
    assert {r["status"] for r in rows} == {"completed", "validation_failed"}

    failed = tmp_path / "raw-failed.jsonl"
    result = enrich(
        capsys, "export", "--what", "raw", "--status", "validation_failed", "--out", str(failed),
        "--partition", landed.mixed,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    broken, gold = sorted(read_jsonl(failed), key=lambda r: r["record_index"], reverse=True)
    assert gold["raw"]["tier"] == "gold" and gold["parse_error"] is None
    assert broken["raw"] == '{"conversation_id": "broken", ' and broken["parse_error"]

    folder = tmp_path / "raw"
    result = enrich(
        capsys, "export", "--what", "raw", "--format", "json", "--out", str(folder),
        "--partition", landed.clean,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert {p.stem for p in folder.iterdir()} == {c["conversation_id"] for c in landed.good[4:]}


@pytest.mark.parametrize(
    ("args", "message_part"),
    [
        (["--what", "raw", "--format", "openai"], "cannot be written as openai"),
        (["--what", "quarantine", "--format", "sharegpt"], "cannot be written as sharegpt"),
        (["--what", "enriched", "--status", "validation_failed"], "completed conversations only"),
        (["--what", "everything"], "expected one of raw, enriched, training, quarantine"),
        (["--what", "enriched", "--format", "csv"], "expected one of jsonl, json"),
    ],
)
def test_export_refuses_combinations_that_mean_nothing(
    landed: Landed,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: list[str],
    message_part: str,
) -> None:
    result = enrich(capsys, "export", *args, "--out", str(tmp_path / "x.jsonl"))
    assert result.code == 2
    assert message_part in " ".join(result.stderr.replace("│", " ").split())
    assert not (tmp_path / "x.jsonl").exists()


def test_export_of_an_unknown_partition_or_onto_a_folder_fails_in_one_line(
    landed: Landed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    unknown = enrich(
        capsys, "export", "--what", "enriched", "--partition", "nope", "--out", str(tmp_path / "x")
    )
    assert unknown.code == 2
    assert unknown.stderr.strip().splitlines() == [
        "enrich: usage error: Invalid value: --partition 'nope': no such partition "
        "(see 'enrich export --help')"
    ]
    folder = enrich(capsys, "export", "--what", "enriched", "--out", str(tmp_path))
    assert folder.code == 1 and len(folder.stderr.strip().splitlines()) == 1


# --- enrich bulk -------------------------------------------------------------------------


def test_bulk_without_force_skips_completed_and_fails_bad_ids(
    landed: Landed, capsys: pytest.CaptureFixture[str]
) -> None:
    completed = landed.good[0]["conversation_id"]
    result = enrich(
        capsys, "bulk", completed, "not-a-uuid", UNKNOWN_ID, landed.invalid["conversation_id"],
        "--json",
    )  # fmt: skip
    assert result.code == 1
    assert result.stderr.strip().count("\n") == 0 and "3 of 4 item(s) failed" in result.stderr
    report = result.json()
    assert list(report) == ["total", "successful", "failed", "skipped", "items"]
    assert (report["total"], report["successful"], report["failed"], report["skipped"]) == (
        4,
        0,
        3,
        1,
    )
    outcomes = {i["conversation_id"]: (i["outcome"], i["error"]) for i in report["items"]}
    assert outcomes[completed] == ("skipped", None)
    assert outcomes["not-a-uuid"] == ("failed", "invalid_id: not a UUID")
    assert outcomes[UNKNOWN_ID][0] == "failed" and outcomes[UNKNOWN_ID][1].startswith("not_found")
    assert outcomes[landed.invalid["conversation_id"]][1].startswith("validation_failed")
    assert all(list(i) == ["conversation_id", "outcome", "error"] for i in report["items"])


def test_bulk_with_nothing_to_do_exits_0_and_starts_no_run(
    landed: Landed, capsys: pytest.CaptureFixture[str]
) -> None:
    runs_before = len(landed.instance.get_run_records())
    result = enrich(capsys, "bulk", *(c["conversation_id"] for c in landed.good))
    assert result.code == 0, result.stderr
    assert "total 7  successful 0  failed 0  skipped 7" in result.stdout
    assert len(landed.instance.get_run_records()) == runs_before


def test_bulk_force_re_enriches_a_completed_conversation_and_a_malformed_id_is_an_item_error(
    fresh: tuple[Lake, DagsterInstance], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lake, instance = fresh
    target, bystander = conversation(), conversation()
    (partition,) = run_files(
        lake, instance, [write_jsonl(tmp_path / "in.jsonl", [target, bystander])]
    )
    before = read_status(lake, partition).sort("record_index")

    result = enrich(capsys, "bulk", "--force", "--json", "12345", target["conversation_id"].upper())
    assert result.code == 1  # the malformed id failed; the other was processed
    report = result.json()
    assert (report["total"], report["successful"], report["failed"]) == (2, 1, 1)
    assert report["items"][0] == {
        "conversation_id": "12345",
        "outcome": "failed",
        "error": "invalid_id: not a UUID",
    }
    assert report["items"][1]["outcome"] == "successful"

    after = read_status(lake, partition).sort("record_index")
    assert after["status"].to_list() == ["completed", "completed"]
    # The target was re-enriched (a new enriched_at, one more attempt); the bystander kept its own.
    assert after["enriched_at"][0] > before["enriched_at"][0]
    assert after["retry_count"].to_list() == [1, 0]
    assert after["enriched_at"][1] == before["enriched_at"][1]
    (run,) = [r for r in instance.get_run_records() if BULK_REQUEST_TAG in r.dagster_run.tags]
    tags = run.dagster_run.tags
    assert tags[BULK_REQUEST_TAG].startswith("bulk-") and tags["dagster/partition"] == partition
    assert {k.to_user_string() for k in run.dagster_run.asset_selection or []} == {
        "enriched_conversations",
        "normalized_conversations",
    }


def test_bulk_of_1000_ids_runs_once_per_partition_end_to_end(
    fresh: tuple[Lake, DagsterInstance], tmp_path: Path
) -> None:
    lake, instance = fresh
    records = [conversation() for _ in range(1000)]
    partitions = run_files(
        lake,
        instance,
        [
            write_jsonl(tmp_path / "in" / "first.jsonl", records[:500]),
            write_jsonl(tmp_path / "in" / "second.jsonl", records[500:]),
        ],
    )
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# the whole lot\n" + "\n".join(r["conversation_id"] for r in records))

    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("enrich")),  # the console script `uv run` runs
            "bulk",
            "--from-file",
            str(ids_file),
            "--force",
            "--json",
        ],
        cwd=PROJECT,
        env={**os.environ},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert (report["total"], report["successful"], report["failed"], report["skipped"]) == (
        1000,
        1000,
        0,
        0,
    )
    bulk_runs = [r for r in instance.get_run_records() if BULK_REQUEST_TAG in r.dagster_run.tags]
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in bulk_runs) == sorted(partitions)
    assert len({r.dagster_run.tags[BULK_REQUEST_TAG] for r in bulk_runs}) == 1
    for partition in partitions:
        statuses = read_status(lake, partition)
        assert statuses["status"].to_list() == ["completed"] * 500
        assert statuses["retry_count"].to_list() == [1] * 500


# --- lifecycle: a run that dies mid-enrichment ---------------------------------------------


class DyingEnricher:
    """The heuristic enricher, killed after its first chunk of conversations."""

    name = "heuristic"

    def __init__(self) -> None:
        self.chunks = 0
        self.inner = HeuristicEnricher()

    def annotate(self, conversations: pl.DataFrame) -> pl.DataFrame:
        if conversations.height:
            self.chunks += 1
            if self.chunks > 1:
                raise RuntimeError("enrichment worker killed")
        return self.inner.annotate(conversations)


class DyingLLMResource(LLMResource):
    """Test-only: the enricher resource whose enricher dies mid-partition."""

    def build_enricher(self, cache_dir: Path | None = None, **_: object) -> DyingEnricher:  # type: ignore[override]
        return DyingEnricher()


def test_a_run_that_dies_mid_enrichment_is_recovered_by_the_next_run(
    fresh: tuple[Lake, DagsterInstance], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from enrichment_assets.defs.conversations.jobs import LAYER_ASSETS

    lake, instance = fresh
    records = [conversation() for _ in range(5)]
    (partition,) = land_files(lake, instance, [write_jsonl(tmp_path / "in.jsonl", records)])

    crashed = materialize(
        LAYER_ASSETS,
        partition_key=partition,
        instance=instance,
        resources={
            "lake": LakeResource(enrich_chunk_rows=2),
            "enricher": DyingLLMResource(),
            "pii": PiiRedactionResource(),
        },
        raise_on_error=False,
    )
    assert not crashed.success
    stuck = read_status(lake, partition)
    assert stuck["status"].to_list() == ["enrichment_in_progress"] * 5
    assert stuck["last_attempt"].null_count() == 0 and stuck["enriched_at"].null_count() == 5
    listing = enrich(capsys, "status", "--status", "enrichment_in_progress", "--json").json()
    assert listing["total"] == 5

    (recovered,) = materialize_partitions(instance, [partition])
    assert recovered.success
    statuses = read_status(lake, partition)
    assert statuses["status"].to_list() == ["completed"] * 5
    assert statuses["retry_count"].to_list() == [1] * 5  # the second attempt
    assert statuses["enriched_at"].null_count() == 0
    found = enrich(capsys, "status", records[0]["conversation_id"], "--json").json()
    assert found["status"] == "completed" and found["retry_count"] == 1
    assert len(read_jsonl(lake.export_path("enriched", partition))) == 5
