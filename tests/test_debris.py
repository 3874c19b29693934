"""Leftovers of dead writers are removed at start; a live writer's files and people's are not."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from enrichment_assets.debris import clean_leftovers, remove_own_leftovers
from enrichment_assets.lake import HOST_TAG, hidden_temp
from enrichment_assets.locks import claim, claimed_partitions


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def temp_of(pid: int, folder: Path, name: str = "x.parquet") -> Path:
    own = hidden_temp(folder / name)
    other = own.with_name(own.name.replace(f"-{os.getpid()}-", f"-{pid}-"))
    own.rename(other)
    return other


def test_a_dead_writers_temporary_files_and_scratch_go_a_live_ones_stay(tmp_path: Path) -> None:
    data = tmp_path / "data"
    layer = data / "lake" / "raw"
    layer.mkdir(parents=True)
    gone = temp_of(dead_pid(), layer)
    mine = hidden_temp(layer / "y.parquet")
    scratch_root = tmp_path / "shm"
    dead_scratch = scratch_root / f"enrich-{HOST_TAG}-{dead_pid()}-abc"
    live_scratch = scratch_root / f"enrich-{HOST_TAG}-{os.getpid()}-abc"
    for folder in (dead_scratch, live_scratch):
        folder.mkdir(parents=True)
    # Someone's upload in progress in the landing folder is theirs, whatever its name.
    upload = data / "landing" / ".chats.jsonl.tmp"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(upload, (old, old))

    removed = clean_leftovers(data, [scratch_root])

    assert set(removed) == {gone, dead_scratch}
    assert mine.exists() and live_scratch.exists() and upload.exists()


def test_an_interrupted_command_removes_its_own_files_and_claim(tmp_path: Path) -> None:
    data = tmp_path / "data"
    mine = hidden_temp(data / "export" / "enriched" / "p.jsonl")
    scratch_root = tmp_path / "shm"
    scratch = scratch_root / f"enrich-{HOST_TAG}-{os.getpid()}-abc"
    scratch.mkdir(parents=True)
    with claim(data, ["p"]):
        assert claimed_partitions(data) == {"p"}
        remove_own_leftovers(data, [scratch_root])
        assert not mine.exists() and not scratch.exists()
        assert claimed_partitions(data) == set()


def test_the_claim_of_a_command_that_died_is_void(tmp_path: Path) -> None:
    data = tmp_path / "data"
    script = (
        "import sys, time; from pathlib import Path; from enrichment_assets.locks import claim\n"
        "with claim(Path(sys.argv[1]), ['a', 'b']):\n    print('held', flush=True); time.sleep(60)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(data)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    assert claimed_partitions(data) == {"a", "b"}
    process.kill()
    process.wait()
    assert claimed_partitions(data) == set()
    assert not list((data / "lake" / "claims").iterdir())


def test_a_killed_writer_not_yet_reaped_is_dead(tmp_path: Path) -> None:
    """A killed process stays a zombie until its parent waits for it (a worker's parent, a
    container runtime): it writes nothing more, so its files are leftovers already."""
    layer = tmp_path / "data" / "lake" / "enriched"
    layer.mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        left = temp_of(writer.pid, layer)
        assert clean_leftovers(tmp_path / "data", []) == [] and left.exists()
        writer.kill()
        deadline = time.monotonic() + 30
        while left.exists() and time.monotonic() < deadline:
            clean_leftovers(tmp_path / "data", [])
            time.sleep(0.1)
        assert not left.exists()
        assert Path(f"/proc/{writer.pid}").exists()  # a zombie still: nobody waited for it
    finally:
        writer.kill()
        writer.wait()
