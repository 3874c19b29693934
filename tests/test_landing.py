"""Landing by content, and files as files: names, FIFOs, links, concurrent landers.

Real files, a real lake and real processes; no Dagster run (see test_messy_input.py).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson
import pytest

from enrichment_assets.ingest.files import escape_name, unescape_name
from enrichment_assets.inputs import InputError, expand_inputs, inspect_file, land_inputs
from enrichment_assets.lake import Lake, atomic_path
from enrichment_assets.landing_store import ContentIndex, FileChangedError, register_batch
from tests.factories import conversation, write_jsonl


def landed(lake: Lake, *paths: Path):
    """land_inputs, in a thread that must end: a FIFO opened for reading would block it."""
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=land_inputs(lake, list(paths))))
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "landing blocked"
    return result["r"]


def stored_names(lake: Lake) -> list[str]:
    store = lake.data_dir / "lake" / "landing_store"
    return sorted(p.name for p in store.glob("*/files/*"))


def test_the_same_bytes_under_another_name_or_folder_are_landed_once(lake: Lake, tmp_path):
    first = write_jsonl(tmp_path / "a" / "day-1.jsonl", [conversation(), conversation()])
    copy = tmp_path / "b" / "renamed.jsonl"
    copy.parent.mkdir()
    shutil.copy(first, copy)

    report = landed(lake, first, copy)
    (partition,) = report.partitions
    assert report.notes == [f"{copy}: already landed, in partition {partition}"]
    assert report.problems == []
    assert lake.registered_batches() == [partition]

    again = landed(lake, copy, first)  # a rerun: the same partition, nothing new
    assert again.partitions == [partition] and lake.registered_batches() == [partition]
    assert len(again.notes) == 2


def _land_in_another_process(data_dir: str, path: str) -> list[str]:
    return land_inputs(Lake(data_dir), [Path(path)]).partitions


def test_landers_in_several_processes_at_once_land_the_same_bytes_once(lake: Lake, tmp_path):
    source = write_jsonl(tmp_path / "src.jsonl", [conversation() for _ in range(50)])
    copies = []
    for n in range(6):
        copy = tmp_path / f"copy-{n}" / f"name-{n}.jsonl"
        copy.parent.mkdir()
        shutil.copy(source, copy)
        copies.append(str(copy))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(6, mp_context=context) as pool:
        answers = list(pool.map(_land_in_another_process, [str(lake.data_dir)] * 6, copies))

    assert len({tuple(a) for a in answers}) == 1
    assert lake.registered_batches() == answers[0]
    assert len(stored_names(lake)) == 1


def test_a_lake_landed_before_the_index_is_indexed_from_its_manifests(lake: Lake, tmp_path):
    source = write_jsonl(tmp_path / "old.jsonl", [conversation()])
    (partition,) = landed(lake, source).partitions
    shutil.rmtree(lake.data_dir / "lake" / "landing_store" / ".index")

    copy = tmp_path / "same-bytes.jsonl"
    shutil.copy(source, copy)
    assert landed(lake, copy).partitions == [partition]
    assert lake.registered_batches() == [partition]


def test_any_file_name_the_filesystem_allows_is_landed_and_recorded_losslessly(
    lake: Lake, tmp_path
):
    folder = tmp_path / "in"
    folder.mkdir()
    names = [
        b"x" * 238 + b".jsonl",  # 244 bytes: a temp name built from it would pass 255
        b"caf\xe9-\xff\xfe.jsonl",  # not UTF-8
        b"-rf.jsonl",
        b"new\nline \x1b]0;pwned\x07 [red]x[/red].jsonl",
    ]
    paths = []
    for name in names:
        path = Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))
        write_jsonl(path, [conversation()])
        paths.append(path)

    report = landed(lake, *paths)
    assert report.problems == [] and len(report.partitions) == 4
    recorded = [lake.load_manifest(p).files[0].source_path for p in report.partitions]
    assert [unescape_name(r) for r in recorded] == [os.fsencode(p) for p in paths]
    assert recorded[1].endswith("caf\\xe9-\\xff\\xfe.jsonl")
    assert all(r.isprintable() for r in recorded)  # no newline, no escape reaches a terminal
    assert "\\x1b]0;pwned\\x07" in recorded[3]
    for stored in stored_names(lake):  # named after the content, never the user's name
        assert stored.split("-")[1] in {
            m.sha256[:16] for p in report.partitions for m in lake.load_manifest(p).files
        }


def test_a_long_target_name_gets_a_short_temporary_name(tmp_path):
    target = tmp_path / ("y" * 250)
    with atomic_path(target) as tmp:
        assert len(tmp.name.encode()) < 40
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done"


def test_files_that_are_not_regular_files_are_rows_of_one_batch_and_nothing_blocks(
    lake: Lake, tmp_path
):
    folder = tmp_path / "odd"
    folder.mkdir()
    good = write_jsonl(folder / "good.jsonl", [conversation()])
    os.mkfifo(folder / "pipe.jsonl")
    os.symlink(folder / "loop-b.jsonl", folder / "loop-a.jsonl")
    os.symlink(folder / "loop-a.jsonl", folder / "loop-b.jsonl")
    os.symlink(folder / "nowhere.jsonl", folder / "dangling.jsonl")
    (folder / "empty.json").write_bytes(b"")

    found = expand_inputs([folder])
    assert sorted(p.name for p in found.files) == [
        "dangling.jsonl",
        "empty.json",
        "good.jsonl",
        "loop-a.jsonl",
        "loop-b.jsonl",
        "pipe.jsonl",
    ]
    report = landed(lake, *found.files)
    good_partition, problems = report.partitions
    assert lake.load_manifest(good_partition).files[0].source_path == str(good)
    reasons = {
        Path(e.source_path).name: (e.rule, e.error) for e in lake.load_manifest(problems).files
    }
    assert reasons == {
        "dangling.jsonl": ("not_a_regular_file", "not a regular file (a dangling symbolic link)"),
        "empty.json": ("empty_file", "cannot be read: empty file"),
        "loop-a.jsonl": ("not_a_regular_file", "not a regular file (a symbolic link loop)"),
        "loop-b.jsonl": ("not_a_regular_file", "not a regular file (a symbolic link loop)"),
        "pipe.jsonl": ("not_a_regular_file", "not a regular file (a FIFO)"),
    }
    assert report.problems[0] == (
        f"{folder}/dangling.jsonl: not a regular file (a dangling symbolic link) "
        f"(partition {problems})"
    )
    assert len(report.problems) == 5


def test_paths_that_do_not_exist_are_problems_and_nothing_at_all_is_an_error(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [conversation()])
    found = expand_inputs([good, tmp_path / "nope.jsonl"])
    assert found.files == [good]
    assert found.missing == [f"{tmp_path}/nope.jsonl: no such file or folder"]
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file or folder"):
        expand_inputs([tmp_path / "nope.jsonl"])
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(InputError, match="no input files found in"):
        expand_inputs([tmp_path / "empty-folder"])


def test_escaped_names_round_trip_every_byte():
    every_byte = bytes(range(1, 256)).replace(b"/", b"")
    for name in (every_byte, "é ✓ \u202e \u2028".encode(), b"\\x41\\\\", b"\xc2\x85"):
        text = escape_name(name)
        assert unescape_name(text) == name
        assert text.isprintable()
        orjson.dumps(text)  # valid UTF-8: a manifest, a cursor, a tag can hold it


def test_a_file_that_changes_while_it_is_copied_is_not_registered_half_frozen(lake: Lake, tmp_path):
    path = write_jsonl(tmp_path / "moving.jsonl", [conversation()])
    source = inspect_file(path)
    path.write_bytes(path.read_bytes() + b"\n")  # appended after it was hashed

    with pytest.raises(FileChangedError, match="changed while being landed"):
        register_batch(lake, [source])
    assert lake.registered_batches() == []
    assert stored_names(lake) == []
    assert ContentIndex(lake).batch_of(source.sha256) is None
