"""Hostile ids, text and paths on the command line (issue 17): terminal, paths, export targets.

One batch through the real pipeline holds conversation ids that are Rich markup,
terminal escape sequences, a bidirectional override, a path and 300 characters;
the records are quarantined (not UUIDs) and so listed, shown and exported like any.
Commands run in-process (`tests.cli.enrich`), and once as a real process on a
pseudo-terminal, as a person would see them.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import pytest
from dagster import instance_for_test

from enrichment_assets.cli.operations.export import file_stem
from enrichment_assets.cli.runner import land_files, materialize_partitions
from enrichment_assets.lake import Lake
from tests.cli import enrich
from tests.factories import conversation, write_jsonl
from tests.postgres import requires_postgres

PROJECT = Path(__file__).resolve().parents[1]
MARKUP_IDS = ["[red]x[/red]", "[/bold]", "[link=file:///etc/passwd]click[/link]", ":warning:"]
TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title
CLEAR = "\x1b[2J\x1b[H"  # clears the screen
C1_CSI = "\x9b31m"  # the one-byte CSI some terminals honour
BIDI = "\u202egnp.exe"  # shows as "exe.png"
CONTROL_IDS = [TITLE, CLEAR, C1_CSI, BIDI, "line\nbreak"]
LONG_ID = "x" * 300
PATH_ID = "../../../../tmp/evil"
HOSTILE_IDS = [*MARKUP_IDS, *CONTROL_IDS, LONG_ID, PATH_ID]
# What must never reach a terminal from the data.
RAW_CONTROLS = ["\x1b]", "\x1b[2J", "\x07", "\x9b", "\u202e"]


@dataclass
class Hostile:
    lake: Lake
    partition: str
    good: list[dict]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp("cli-hostile")
    with pytest.MonkeyPatch.context() as patch, instance_for_test() as instance:
        patch.setenv("ENRICH_DATA_DIR", str(root / "data"))
        for name in ("ENRICH_LANDING_DIR", "ENRICH_ENRICHER", "ENRICH_APP_DB_URL"):
            patch.delenv(name, raising=False)
        lake = Lake(root / "data")
        good = [conversation() for _ in range(4)]
        records = [*good, *(conversation(conversation_id=cid) for cid in HOSTILE_IDS)]
        (partition,) = land_files(lake, instance, [write_jsonl(root / "in" / "b.jsonl", records)])
        (outcome,) = materialize_partitions(instance, [partition])
        assert outcome.success, outcome
        yield Hostile(lake, partition, good)


def assert_no_raw_controls(text: str) -> None:
    for sequence in RAW_CONTROLS:
        assert sequence not in text, repr(sequence)


def one_line(stderr: str) -> str:
    lines = stderr.strip("\n").split("\n")
    assert len(lines) == 1, stderr
    assert_no_raw_controls(lines[0])
    return lines[0]


# --- Rich markup and control characters ------------------------------------------------


def test_status_of_a_markup_id_fails_in_one_line(
    hostile: Hostile, capsys: pytest.CaptureFixture[str]
) -> None:
    result = enrich(capsys, "status", "[/nope]")
    assert result.code == 1
    assert one_line(result.stderr) == "enrich: error: unknown conversation id '[/nope]'"
    assert "Traceback" not in result.stderr


def test_listing_shows_markup_and_control_ids_as_text(
    hostile: Hostile, capsys: pytest.CaptureFixture[str]
) -> None:
    result = enrich(capsys, "status", "--status", "validation_failed", "--limit", "100")
    assert result.code == 0, result.stderr
    for markup in MARKUP_IDS:
        assert markup in result.stdout
    assert_no_raw_controls(result.stdout)
    for shown in ("\\x1b]0;pwned\\x07", "\\x1b[2J\\x1b[H", "\\x9b31m", "\\u202egnp.exe"):
        assert shown in result.stdout
    assert "line\\nbreak" in result.stdout


@pytest.mark.parametrize("cid", [MARKUP_IDS[1], TITLE, BIDI])
def test_one_conversation_shows_its_hostile_id_and_document_escaped(
    hostile: Hostile, capsys: pytest.CaptureFixture[str], cid: str
) -> None:
    result = enrich(capsys, "status", cid)
    assert result.code == 0, result.stderr
    assert "validation_failed" in result.stdout
    assert_no_raw_controls(result.stdout)
    as_json = enrich(capsys, "status", cid, "--json")
    assert as_json.code == 0, as_json.stderr
    assert_no_raw_controls(as_json.stdout)  # JSON escapes (\u001b), the same data
    found = as_json.json()
    assert found["conversation_id"] == cid and found["raw"]["conversation_id"] == cid


def test_bulk_lists_markup_and_control_ids_as_failed_items(
    hostile: Hostile, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = ["[/bold]", "[red]x[/red]", TITLE, C1_CSI]
    result = enrich(capsys, "bulk", *ids)
    assert result.code == 1
    assert "[/bold]" in result.stdout and "[red]x[/red]" in result.stdout
    assert_no_raw_controls(result.stdout)
    assert one_line(result.stderr).startswith("enrich: error: 4 of 4 item(s) failed")
    as_json = enrich(capsys, "bulk", *ids, "--json")
    assert_no_raw_controls(as_json.stdout)
    assert [item["conversation_id"] for item in as_json.json()["items"]] == ids


@pytest.mark.parametrize(
    ("args", "code", "quoted"),
    [
        (["status", CLEAR + "[/x]"], 1, "'\\x1b[2J\\x1b[H[/x]'"),
        (["status", "line\nbreak\x1b]0;x\x07-unknown"], 1, "line\\nbreak\\x1b]0;x\\x07"),
        (["status", "--limit", "[/x]" + TITLE], 2, "--limit"),
        (["status", "--status", "[/x]" + TITLE], 2, "'[/x]\\x1b]0;pwned\\x07'"),
        (["export", "--what", "[/x]" + TITLE, "--out", "unused.jsonl"], 2, "'[/x]\\x1b]0;"),
        (["bulk", "--from-file", "/nonexistent/[/x]" + TITLE], 1, "/nonexistent/[/x]\\x1b]0;"),
    ],
)
def test_errors_quoting_hostile_input_stay_one_visible_line(
    hostile: Hostile, capsys: pytest.CaptureFixture[str], args: list[str], code: int, quoted: str
) -> None:
    result = enrich(capsys, *args)
    assert result.code == code, result.stderr
    line = one_line(result.stderr)
    assert line.startswith("enrich: ") and quoted in line, line
    assert "Traceback" not in result.stderr


def test_a_terminal_sees_no_escape_sequence_from_the_data(hostile: Hostile) -> None:
    """The real command on a pseudo-terminal: Rich styles it, the data stay inert."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "enrichment_assets.cli.commands",
            "status",
            "--status",
            "validation_failed",
        ],
        cwd=PROJECT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(controller)
    assert process.wait(timeout=60) == 0, shown.decode(errors="replace")
    text = shown.decode()
    assert "\x1b[" in text  # Rich did style the table: this is a terminal
    assert_no_raw_controls(text.replace("\x1b[", "").replace("\x1b]8;", ""))
    assert "[red]x[/red]" in text and "\\x1b]0;pwned\\x07" in text


# --- Traversal ---------------------------------------------------------------------------


@pytest.fixture
def outside_copy(hostile: Hostile) -> Iterator[Path]:
    """Real status and raw files planted where `--partition ../../../outside` leads."""
    outside = hostile.lake.data_dir.parent / "outside.parquet"
    shutil.copyfile(hostile.lake.layer_path("status", hostile.partition), outside)
    yield outside
    outside.unlink()


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--partition"],
        ["export", "--what", "raw", "--out", "x.jsonl", "--partition"],
        ["export", "--what", "enriched", "--out", "x.jsonl", "--partition"],
    ],
)
def test_a_partition_that_is_not_known_is_a_usage_error(
    hostile: Hostile,
    outside_copy: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: list[str],
) -> None:
    for partition in ("../../../outside", "/etc/passwd", "nope", f"{hostile.partition}/.."):
        argv = [str(tmp_path / a) if a == "x.jsonl" else a for a in args]
        result = enrich(capsys, *argv, partition)
        assert result.code == 2, result
        assert "no such partition" in one_line(result.stderr)
        assert result.stdout == ""
    assert not (tmp_path / "x.jsonl").exists()


def test_a_known_partition_without_that_kind_of_data_is_an_error(
    hostile: Hostile, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (hostile.lake.data_dir / "export" / "quarantine" / f"{hostile.partition}.jsonl").rename(
        tmp_path / "moved.jsonl"
    )
    try:
        result = enrich(
            capsys, "export", "--what", "quarantine", "--partition", hostile.partition,
            "--out", str(tmp_path / "q.jsonl"),
        )  # fmt: skip
    finally:
        (tmp_path / "moved.jsonl").rename(
            hostile.lake.data_dir / "export" / "quarantine" / f"{hostile.partition}.jsonl"
        )
    assert result.code == 1
    assert one_line(result.stderr).endswith("no quarantine data for it")


@requires_postgres
def test_a_status_row_naming_a_partition_outside_the_lake_reads_nothing_there(
    hostile: Hostile,
    app_db: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The application database is not the lake: its partition names are looked up first."""
    outside = hostile.lake.data_dir.parent / "outside-raw.parquet"
    shutil.copyfile(hostile.lake.layer_path("raw", hostile.partition), outside)
    cid = hostile.good[0]["conversation_id"]
    with psycopg.connect(app_db) as conn:
        conn.execute(
            "INSERT INTO conversation_status (partition, record_index, conversation_id, status, "
            "updated_at) VALUES (%s, 0, %s, 'completed', %s)",
            ["../../../outside-raw", cid, datetime.now(UTC)],
        )
    try:
        result = enrich(capsys, "status", cid, "--json")
    finally:
        outside.unlink()
    assert result.code == 0, result.stderr
    found = result.json()
    assert found["partition"] == "../../../outside-raw"
    assert found["raw"] is None and found["enriched"] is None


# --- Export targets ----------------------------------------------------------------------


def export_enriched(capsys: pytest.CaptureFixture[str], out: Path, *extra: str):
    return enrich(capsys, "export", "--what", "enriched", "--out", str(out), *extra)


@pytest.fixture
def umask_027() -> Iterator[None]:
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_a_new_file_gets_the_users_umask(
    hostile: Hostile, capsys: pytest.CaptureFixture[str], tmp_path: Path, umask_027: None
) -> None:
    out = tmp_path / "new" / "enriched.jsonl"
    result = export_enriched(capsys, out)
    assert result.code == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert len(out.read_bytes().splitlines()) == 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["enriched.jsonl"]


def test_an_existing_file_is_replaced_only_with_force_and_keeps_its_mode(
    hostile: Hostile, capsys: pytest.CaptureFixture[str], tmp_path: Path, umask_027: None
) -> None:
    for mode in (0o604, 0o600):  # never narrowed to 0600, never widened by the umask
        out = tmp_path / f"mine-{mode:o}.jsonl"
        out.write_bytes(b"keep me\n")
        out.chmod(mode)
        refused = export_enriched(capsys, out)
        assert refused.code == 1
        assert one_line(refused.stderr).endswith("exists; --force replaces it")
        assert out.read_bytes() == b"keep me\n" and stat.S_IMODE(out.stat().st_mode) == mode
        forced = export_enriched(capsys, out, "--force")
        assert forced.code == 0, forced.stderr
        assert len(out.read_bytes().splitlines()) == 4
        assert stat.S_IMODE(out.stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine-600.jsonl", "mine-604.jsonl"]


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _device(path: Path) -> Path:
    try:  # the same node as /dev/null, made here: the test never aims at the real one
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a character device needs root")
    return path


def _socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()
    return path


def _link(path: Path) -> Path:
    target = path.with_name("target.jsonl")
    target.write_bytes(b"target\n")
    path.symlink_to(target)
    return path


@pytest.mark.parametrize(
    ("make", "kind", "check"),
    [
        (_fifo, "a FIFO", stat.S_ISFIFO),
        (_device, "a character device", stat.S_ISCHR),
        (_socket, "a socket", stat.S_ISSOCK),
        (_link, "a symbolic link", stat.S_ISLNK),
    ],
)
@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_export_refuses_a_node_that_is_not_a_regular_file_even_with_force(
    hostile: Hostile,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    make,
    kind: str,
    check,
    fmt: str,
) -> None:
    node = make(tmp_path / "out")
    result = export_enriched(capsys, node, "--format", fmt, "--force")
    assert result.code == 1
    assert one_line(result.stderr).endswith(f"is {kind}, not a regular file; give another --out")
    assert check(node.lstat().st_mode)  # still what it was
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".enrich-export-")]


def test_json_export_names_files_safely_whatever_the_ids(
    hostile: Hostile, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    result = enrich(
        capsys, "export", "--what", "quarantine", "--format", "json", "--out", str(folder)
    )
    assert result.code == 0, result.stderr
    written = {orjson.loads(p.read_bytes())["conversation_id"]: p for p in folder.iterdir()}
    assert set(written) == set(HOSTILE_IDS)
    for cid, path in written.items():
        assert path.parent == folder and len(path.name.encode()) <= 255
        assert path.name == f"{file_stem(cid)}.json"
        assert_no_raw_controls(path.name)
    assert len(written[LONG_ID].name) < 100
    assert not (tmp_path.parent / "tmp" / "evil.json").exists()
    # Written again into the now non-empty folder: only with --force.
    again = enrich(
        capsys, "export", "--what", "quarantine", "--format", "json", "--out", str(folder)
    )
    assert again.code == 1 and "--force" in one_line(again.stderr)
    written[TITLE].unlink()
    fifo = _fifo(written[TITLE])  # a FIFO where a document goes is never replaced
    forced = enrich(
        capsys, "export", "--what", "quarantine", "--format", "json", "--out", str(folder),
        "--force",
    )  # fmt: skip
    assert forced.code == 1
    assert "is a FIFO" in one_line(forced.stderr)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_file_stem_keeps_plain_ids_and_hashes_the_rest() -> None:
    uuid_id = "0b6f3c8e-2d1a-4c52-9f0e-7a1d2b3c4d5e"
    assert file_stem(uuid_id) == uuid_id
    stems = {file_stem(cid) for cid in [*HOSTILE_IDS, "x" * 301, "..", ".hidden", "a/b", "a_b"]}
    assert len(stems) == len(HOSTILE_IDS) + 5  # all distinct
    for stem in stems:
        assert "/" not in stem and not stem.startswith(".") and len(stem) <= 100
