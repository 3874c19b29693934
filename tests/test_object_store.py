"""The lake on object storage (`ENRICH_LAKE_URI=s3://...`), against a real SeaweedFS.

The same commands as the embedded default; exports byte-identical to a local folder's; a
process with an empty working copy sees what others pushed; a writer killed mid-push
leaves no manifest or receipt pointing at missing objects; a bad URI or a store that is
down is one line and exit 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.fs as pafs
import pytest

from enrichment_assets.lake import EXPORT_KINDS
from enrichment_assets.object_store import CHECKSUM_DEFAULTS, LakeMirror, S3Location, s3_filesystem
from enrichment_assets.sample_data import write_sample_files
from tests.cli import enrich
from tests.object_store import S3Server, free_ports, lake_env

ENRICH = Path(sys.executable).parent / "enrich"
pytestmark = pytest.mark.timeout(900)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENRICH), *args], env=env, capture_output=True, text=True, timeout=600
    )


def _objects(server: S3Server, bucket: str, folder: str) -> dict[str, bytes]:
    """{path under the lake: bytes} of every object under `s3://bucket/lake/<folder>`."""
    filesystem = server.filesystem()
    root = f"{bucket}/lake/"
    selector = pafs.FileSelector(root + folder, recursive=True, allow_not_found=True)
    return {
        info.path[len(root) :]: filesystem.open_input_stream(info.path).readall()
        for info in filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File
    }


def _local_exports(data_dir: Path) -> dict[str, bytes]:
    return {
        path.relative_to(data_dir).as_posix(): path.read_bytes()
        for kind in EXPORT_KINDS
        for path in (data_dir / "export" / kind).glob("*.jsonl")
    }


def test_demo_on_object_store_equals_local_and_an_empty_working_copy_sees_it(
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The same demo on the object store (a process of its own) and on a local folder.
    remote = subprocess.Popen(
        [str(ENRICH), "demo", "-n", "8"],
        env=lake_env(s3_server, s3_bucket, ENRICH_DATA_DIR=str(tmp_path / "worker")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    local = tmp_path / "local"
    monkeypatch.setenv("ENRICH_DATA_DIR", str(local))
    monkeypatch.delenv("ENRICH_LAKE_URI", raising=False)
    local_run = enrich(capsys, "demo", "-n", "8")
    stdout, stderr = remote.communicate(timeout=600)
    assert local_run.code == 0, local_run.stderr
    assert remote.returncode == 0, stderr
    assert f"exports: s3://{s3_bucket}/lake/export" in stdout

    # Read back from the object store: the same files, byte for byte (no aws-chunked framing).
    stored = {
        rel: data
        for rel, data in _objects(s3_server, s3_bucket, "export").items()
        if rel.split("/")[1] in EXPORT_KINDS
    }
    expected = _local_exports(local)
    assert expected and sorted(stored) == sorted(expected)
    assert all(stored[rel] == expected[rel] for rel in expected)

    # Another process, an empty working copy, the same URI: it sees every conversation.
    reader = lake_env(s3_server, s3_bucket, ENRICH_DATA_DIR=str(tmp_path / "empty"))
    seen = _run(reader, "report", "--json")
    assert seen.returncode == 0, seen.stderr
    report, local_report = orjson.loads(seen.stdout), enrich(capsys, "report", "--json").json()
    for key in ("raw", "validated", "quarantined", "normalized", "completed"):
        assert report[key] == local_report[key], key
    assert report["completed"] == 8
    assert report["metrics"]["export_mismatches"] == 0


def test_a_writer_killed_mid_push_leaves_no_pointer_to_a_missing_object(
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [sample] = write_sample_files(tmp_path / "in", 4, seed=3)
    worker = tmp_path / "worker"
    env = lake_env(s3_server, s3_bucket, ENRICH_DATA_DIR=str(worker))
    # Killed (SIGKILL) once its first push has uploaded the data objects, before the
    # manifests, receipts and index markers that point at them.
    killed = _run({**env, "ENRICH_TEST_CRASH_AT": "object_pointers"}, "run", str(sample))
    assert killed.returncode == -9, killed.stderr
    stored = _objects(s3_server, s3_bucket, "")
    frozen = [rel for rel in stored if rel.startswith("lake/landing_store/") and "/files/" in rel]
    assert frozen, sorted(stored)  # the data went first...
    pointers = [
        rel
        for rel in stored
        if rel.endswith("manifest.json")
        or "/.index/" in rel
        or rel.startswith(("lake/exports/", "lake/status/"))
    ]
    assert pointers == []  # ...and nothing points at it yet, no status says `completed`
    # Every object there is whole: the very bytes of the working copy's file.
    assert all(data == (worker / rel).read_bytes() for rel, data in stored.items())
    # A reader with an empty working copy sees a consistent lake: nothing completed yet.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ENRICH_DATA_DIR", str(tmp_path / "reader"))
    report = enrich(capsys, "report", "--json").json()
    assert (report["completed"], report["metrics"]["export_mismatches"]) == (0, 0)

    # The same command again finishes the job; an empty working copy then sees all of it.
    monkeypatch.setenv("ENRICH_DATA_DIR", str(worker))
    assert enrich(capsys, "run", str(sample)).code == 0
    monkeypatch.setenv("ENRICH_DATA_DIR", str(tmp_path / "empty"))
    report = enrich(capsys, "report", "--json").json()
    assert (report["completed"], report["metrics"]["export_mismatches"]) == (4, 0)
    assert any(rel.endswith("manifest.json") for rel in _objects(s3_server, s3_bucket, "lake"))


@pytest.mark.parametrize(
    ("uri", "endpoint", "says"),
    [
        ("s3://Not_A_Bucket/x", None, "is not a bucket name"),
        ("ftp://host/x", None, "unsupported scheme 'ftp'"),
        ("s3://{bucket}-missing/x", None, "no bucket"),
        ("s3://{bucket}/x", "http://127.0.0.1:{port}", "Could not connect"),
    ],
)
def test_a_bad_lake_uri_or_a_store_that_is_down_is_one_line(
    s3_server: S3Server,
    s3_bucket: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    uri: str,
    endpoint: str | None,
    says: str,
) -> None:
    [port] = free_ports(1)  # nothing listens there
    for name, value in s3_server.env(uri.format(bucket=s3_bucket)).items():
        monkeypatch.setenv(name, value)
    if endpoint:
        monkeypatch.setenv("ENRICH_S3_ENDPOINT", endpoint.format(port=port))
    result = enrich(capsys, "status")
    assert result.code == 1
    assert result.stderr.startswith("enrich: error: ") and result.stderr.count("\n") == 1
    assert says in result.stderr and "Traceback" not in result.stderr


def test_checksum_defaults_are_set_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    [request, response] = CHECKSUM_DEFAULTS
    monkeypatch.delenv(request, raising=False)
    monkeypatch.setenv(response, "WHEN_SUPPORTED")
    s3_filesystem("http://127.0.0.1:1")
    assert os.environ[request] == "WHEN_REQUIRED"
    assert os.environ[response] == "WHEN_SUPPORTED"


def test_credentials_from_a_shared_credentials_file_as_deploy_mounts_them(
    s3_server: S3Server,
    s3_bucket: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = data_dir.parent / "object-store.credentials"
    secret.write_text(
        f"[default]\naws_access_key_id = {s3_server.access_key}\n"
        f"aws_secret_access_key = {s3_server.secret_key}\n"
    )
    for name, value in s3_server.env(f"s3://{s3_bucket}/lake").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(secret))
    result = enrich(capsys, "status", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["total"] == 0


def test_two_working_copies_stay_in_step_through_the_store(
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    location = S3Location(s3_bucket, "lake")
    first, second = (LakeMirror(s3_server.filesystem(), location, tmp_path / n) for n in "ab")
    export = Path("export/enriched/p.jsonl")
    for rel, data in (
        (export, b"1\n"),
        (Path("lake/locks/x.lock"), b""),
        (Path("lake/.x.tmp"), b""),
    ):
        (tmp_path / "a" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "a" / rel).write_bytes(data)
    assert first.push() == 1  # locks and temporary files stay on their machine
    assert second.pull() == 1 and (tmp_path / "b" / export).read_bytes() == b"1\n"
    # Changed on both sides: the copy not pushed yet keeps its own, then wins by pushing.
    (tmp_path / "b" / export).write_bytes(b"mine\n")
    (tmp_path / "a" / export).write_bytes(b"theirs\n")
    first.push()
    assert second.pull() == 0 and (tmp_path / "b" / export).read_bytes() == b"mine\n"
    second.push()
    assert first.pull() == 1 and (tmp_path / "a" / export).read_bytes() == b"mine\n"
    # Removed by one copy: removed from the store, then from the other copy.
    (tmp_path / "a" / export).unlink()
    first.push()
    gone = s3_server.filesystem().get_file_info(f"{location.root}/{export}")
    assert gone.type == pafs.FileType.NotFound
    second.pull()
    assert not (tmp_path / "b" / export).exists()
