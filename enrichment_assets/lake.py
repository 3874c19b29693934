"""The lake: where every layer's Parquet, the landing store and the exports live.

Layout under the data folder (`ENRICH_DATA_DIR`, default `./data`; with
`ENRICH_LAKE_URI=s3://...` its `lake/`, `export/` and `reports/` live in an object store,
and this folder is the process's working copy: see `object_store`):

    landing/                          files dropped here are picked up by the sensor
    lake/landing_store/<batch>/       immutable copies of a batch's input + manifest.json
    lake/landing_store/.index/        the content index: which batch holds which bytes
    lake/<layer>/<batch>.parquet      one file per layer and partition
    lake/status/<batch>.parquet       per-conversation status of the batch
    export/<kind>/<batch>.jsonl       training-ready outputs of the contract
    reports/                          data-quality reports

No shared DuckDB database file: every reader opens an in-process connection over
these files, so two processes never lock each other out.

How files are frozen there, by content, is `landing_store`. Temporary names derive
from hashes, never from a user's file name (which may be any bytes, up to 255 of them).
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from enrichment_assets import settings as env_settings

LAYERS = ("raw", "validated", "quarantine", "enriched", "normalized", "status")
EXPORT_KINDS = ("enriched", "training", "quarantine")
_HASH_CHUNK = 1 << 20


def default_data_dir() -> Path:
    """`ENRICH_LAKE_URI` when it names a local folder (a path or `file://`), else
    `ENRICH_DATA_DIR`, else `./data`. With an `s3://` lake this is the local working copy
    (`object_store`)."""
    uri = env_settings.text("ENRICH_LAKE_URI")
    if uri.lower().startswith("file://"):
        return Path(urlsplit(uri).path)
    if uri and "://" not in uri:
        return Path(uri)
    return Path(env_settings.raw("ENRICH_DATA_DIR") or "data")


def default_landing_dir(data_dir: Path | None = None) -> Path:
    """`ENRICH_LANDING_DIR`, or `<data dir>/landing`."""
    explicit = env_settings.raw("ENRICH_LANDING_DIR")
    return Path(explicit) if explicit else (data_dir or default_data_dir()) / "landing"


# Temporary files are hidden beside their target and named after a hash of its name (never
# the name itself, which may be long or hostile), the host and the pid of their writer:
# `debris.clean_leftovers` removes those whose writer is gone.
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def hidden_temp(target: Path, suffix: str = ".tmp") -> Path:
    """Create an empty hidden file beside `target` for its writer; never matches `*.<ext>`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(os.fsencode(target.name)).hexdigest()[:10]
    fd, tmp = tempfile.mkstemp(
        prefix=f".{tag}.{HOST_TAG}-{os.getpid()}-", suffix=suffix, dir=target.parent
    )
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` on success."""
    tmp_path = hidden_temp(target)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def sha256_stream(handle: object) -> str:
    """sha256 hex of the rest of an open binary file."""
    digest = hashlib.sha256()
    while chunk := handle.read(_HASH_CHUNK):  # type: ignore[attr-defined]
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ManifestEntry:
    """One input file of a batch, frozen at registration.

    A file that could not be read at all (`rule` set: see `ingest.files`) has no
    copy in the store (`name` None); the raw layer makes its one row from `error`.
    """

    source_path: str  # where it was found, escaped (`ingest.files.escape_name`)
    name: str | None  # file name inside the landing store (from its hash)
    size: int
    sha256: str | None
    rule: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Manifest:
    """The frozen input of one batch partition."""

    batch: str
    registered_at: str
    files: tuple[ManifestEntry, ...]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "batch": self.batch,
                "registered_at": self.registered_at,
                "files": [entry.__dict__ for entry in self.files],
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = orjson.loads(data)
        files = tuple(ManifestEntry(**entry) for entry in raw["files"])  # older: no rule/error
        return cls(batch=raw["batch"], registered_at=raw["registered_at"], files=files)


class Lake:
    """Paths of the data folder, and the landing store of batches.

    `app_db_url`: the application database its statuses are also published to, and its
    partition locks and identity index are shared through (production); None = none.
    `landing_dir`: the folder the new-file sensor watches; None = `<data dir>/landing`.
    """

    def __init__(
        self,
        data_dir: Path | str,
        app_db_url: str | None = None,
        landing_dir: Path | str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.app_db_url = app_db_url
        self.landing_dir = Path(landing_dir) if landing_dir else self.data_dir / "landing"

    def layer_path(self, layer: str, batch: str) -> Path:
        return self.data_dir / "lake" / layer / f"{batch}.parquet"

    def layer_glob(self, layer: str) -> str:
        return str(self.data_dir / "lake" / layer / "*.parquet")

    def export_path(self, kind: str, batch: str) -> Path:
        return self.data_dir / "export" / kind / f"{batch}.jsonl"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    def batch_dir(self, batch: str) -> Path:
        return self.data_dir / "lake" / "landing_store" / batch

    def manifest_path(self, batch: str) -> Path:
        return self.batch_dir(batch) / "manifest.json"

    def load_manifest(self, batch: str) -> Manifest:
        path = self.manifest_path(batch)
        if not path.exists():
            raise FileNotFoundError(
                f"batch {batch!r} has no manifest at {path}: was it registered?"
            )
        return Manifest.from_json(path.read_bytes())

    def stored_file(self, batch: str, entry: ManifestEntry) -> Path:
        return self.batch_dir(batch) / "files" / entry.name

    def registered_batches(self) -> list[str]:
        root = self.data_dir / "lake" / "landing_store"
        if not root.exists():
            return []
        return sorted(p.parent.name for p in root.glob("*/manifest.json"))
