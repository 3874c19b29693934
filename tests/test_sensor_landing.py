"""`new_raw_files` never leaves the landing folder, never stalls on a name, and lands by
the content index that `enrich run` uses. Real files, a real lake, a real instance."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance

from enrichment_assets.defs.automation.landing import LandingCursor
from enrichment_assets.defs.automation.new_raw_files import (
    NewFilesPlan,
    plan_new_files,
    run_request_for,
)
from enrichment_assets.defs.automation.settings import NewFilesSettings
from enrichment_assets.ingest.files import unescape_name
from enrichment_assets.inputs import land_inputs
from enrichment_assets.lake import Lake
from tests.factories import conversation, write_jsonl

SETTLED = 120  # seconds ago: well past the settle time


def settled(path: Path) -> Path:
    stamp = time.time() - SETTLED
    os.utime(path, (stamp, stamp), follow_symlinks=False)
    return path


def drop(lake: Lake, name: str | bytes, records: int = 1) -> Path:
    """A settled JSONL file in the landing folder; `name` may be any bytes."""
    lake.landing_dir.mkdir(parents=True, exist_ok=True)
    raw = os.path.join(os.fsencode(lake.landing_dir), os.fsencode(name))
    path = Path(os.fsdecode(raw))
    write_jsonl(path, [conversation() for _ in range(records)])
    return settled(path)


def tick(
    instance: DagsterInstance, lake: Lake, cursor: LandingCursor | None = None
) -> tuple[NewFilesPlan, LandingCursor]:
    """One tick's plan, with the instance's partitions, as the sensor makes it."""
    cursor = cursor or LandingCursor()
    known = set(instance.get_dynamic_partitions("batches"))
    plan = plan_new_files(
        lake, lake.landing_dir, known, cursor, NewFilesSettings(), now=time.time()
    )
    if plan.unregistered:
        instance.add_dynamic_partitions("batches", plan.unregistered)
    # The cursor goes through its serialized form, as between two ticks.
    return plan, LandingCursor.parse(cursor.serialize())


def landed_sources(lake: Lake) -> list[bytes]:
    return sorted(
        unescape_name(entry.source_path)
        for batch in lake.registered_batches()
        for entry in lake.load_manifest(batch).files
    )


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the landing folder, with a secret and a 4 GB sparse file."""
    folder = tmp_path / "outside"
    folder.mkdir()
    write_jsonl(folder / "secret.jsonl", [conversation(user_id="secret-user")])
    with (folder / "huge.jsonl").open("wb") as sparse:
        sparse.truncate(4 << 30)
    return folder


def test_links_out_of_the_landing_folder_and_odd_entries_are_refused_with_one_warning_each(
    lake: Lake, instance: DagsterInstance, outside: Path
) -> None:
    good = drop(lake, "good.jsonl")
    landing = lake.landing_dir
    links = {
        "to-secret.jsonl": outside / "secret.jsonl",
        "to-huge.jsonl": outside / "huge.jsonl",
        "to-passwd.jsonl": Path("/etc/passwd"),
        "dangling.jsonl": landing / "gone.jsonl",
        "loop.jsonl": landing / "loop.jsonl",
    }
    for name, target in links.items():
        os.symlink(target, landing / name)
        settled(landing / name)
    os.symlink(outside, landing / "outside-folder")
    os.symlink(good, landing / "inside-link.jsonl")  # inside: the same bytes as good.jsonl
    os.mkfifo(landing / "pipe.jsonl")
    settled(landing / "pipe.jsonl")

    plan, cursor = tick(instance, lake)

    assert len(plan.manifests) == 1
    assert landed_sources(lake) == [os.fsencode(good)]
    refused = "a symbolic link to outside the landing folder: refused, not read"
    assert sorted(plan.warnings) == sorted(
        [
            f"to-secret.jsonl: skipped: {refused}",
            f"to-huge.jsonl: skipped: {refused}",
            f"to-passwd.jsonl: skipped: {refused}",
            "dangling.jsonl: skipped: a dangling symbolic link",
            "loop.jsonl: skipped: a symbolic link loop",
            f"outside-folder: skipped: {refused}",
            "pipe.jsonl: skipped: not a regular file (a FIFO)",
        ]
    )
    # The next tick says nothing again about the same entries.
    again, _ = tick(instance, lake, cursor)
    assert again.warnings == [] and again.manifests == []
    assert landed_sources(lake) == [os.fsencode(good)]


def test_any_file_name_the_filesystem_allows_is_registered_and_the_tick_goes_on(
    lake: Lake, instance: DagsterInstance
) -> None:
    names = [b"caf\xe9-\xff.jsonl", b"n" * 238 + b".jsonl", b"line\nbreak \x1b[2J.jsonl"]
    paths = [drop(lake, name) for name in names]

    plan, cursor = tick(instance, lake)

    assert plan.warnings == []
    assert landed_sources(lake) == sorted(os.fsencode(p) for p in paths)
    tags = run_request_for(plan.manifests[0]).tags
    assert "caf\\xe9-\\xff.jsonl" in tags["enrich/files"] and tags["enrich/file_count"] == "3"
    again, _ = tick(instance, lake, cursor)  # the cursor holds the names too
    assert again.manifests == [] and again.warnings == []


def test_an_empty_or_binary_file_is_landed_as_one_row_with_a_warning(
    lake: Lake, instance: DagsterInstance
) -> None:
    lake.landing_dir.mkdir(parents=True)
    (lake.landing_dir / "empty.json").write_bytes(b"")
    (lake.landing_dir / "noise.bin").write_bytes(bytes(range(128, 256)) * 32)
    for name in ("empty.json", "noise.bin"):
        settled(lake.landing_dir / name)

    plan, _ = tick(instance, lake)

    assert sorted(plan.warnings) == [
        "empty.json: cannot be read: empty file: landed as one quarantined row",
        "noise.bin: cannot be read: binary content (4096 of the first 4096 characters are "
        "not text): landed as one quarantined row",
    ]
    (manifest,) = plan.manifests
    entries = manifest.files
    assert sorted((e.rule, e.name) for e in entries) == [
        ("binary_file", None),
        ("empty_file", None),
    ]


def test_bytes_landed_by_enrich_run_are_not_registered_again_by_the_sensor(
    lake: Lake, instance: DagsterInstance, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "elsewhere.jsonl", [conversation()])
    (partition,) = land_inputs(lake, [source]).partitions
    instance.add_dynamic_partitions("batches", [partition])
    lake.landing_dir.mkdir(parents=True)
    settled(Path(shutil.copy(source, lake.landing_dir / "dropped-copy.jsonl")))

    plan, _ = tick(instance, lake)

    assert plan.manifests == []
    assert plan.notes == [f"dropped-copy.jsonl: content already registered as batch {partition}"]
    assert lake.registered_batches() == [partition]
