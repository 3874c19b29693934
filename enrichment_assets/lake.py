"""The lake: where every layer's Parquet, the landing store and the exports live.

Layout under the data folder (`ENRICH_DATA_DIR`, default `./data`):

    landing/                          files dropped here are picked up by the sensor
    lake/landing_store/<batch>/       immutable copies of a batch's input + manifest.json
    lake/<layer>/<batch>.parquet      one file per layer and partition
    lake/status/<batch>.parquet       per-conversation status of the batch
    export/<kind>/<batch>.jsonl       training-ready outputs of the contract
    reports/                          data-quality reports

No shared DuckDB database file: every reader opens an in-process connection over
these files, so two processes never lock each other out.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from enrichment_assets.faults import fault_point

LAYERS = ("raw", "validated", "quarantine", "enriched", "normalized", "status")
EXPORT_KINDS = ("enriched", "training", "quarantine")
_HASH_CHUNK = 1 << 20


def default_data_dir() -> Path:
    """`ENRICH_DATA_DIR`, or `./data`."""
    return Path(os.environ.get("ENRICH_DATA_DIR", "data"))


def default_landing_dir(data_dir: Path | None = None) -> Path:
    """`ENRICH_LANDING_DIR`, or `<data dir>/landing`."""
    explicit = os.environ.get("ENRICH_LANDING_DIR")
    return Path(explicit) if explicit else (data_dir or default_data_dir()) / "landing"


# Temporary files are hidden beside their target and named after a hash of its name (never
# the name itself, which may be long or hostile), the host and the pid of their writer:
# `debris.clean_leftovers` removes those whose writer is gone.
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def hidden_temp(target: Path, suffix: str = ".tmp") -> Path:
    """Create an empty hidden file beside `target` for its writer; never matches `*.<ext>`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(target.name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ManifestEntry:
    """One input file of a batch, frozen at registration."""

    source_path: str  # where it was found
    name: str  # file name inside the landing store
    size: int
    sha256: str


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
        files = tuple(ManifestEntry(**entry) for entry in raw["files"])
        return cls(batch=raw["batch"], registered_at=raw["registered_at"], files=files)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40] or "batch"


def batch_key(entries: list[tuple[Path, str]]) -> str:
    """A deterministic, comma-free partition key for files with these content hashes.

    The key depends on the content only (plus the first file's name, for people),
    so registering the same bytes again names the same batch.
    """
    digest = hashlib.sha256("\n".join(sorted(h for _, h in entries)).encode()).hexdigest()
    return f"{_slug(entries[0][0].stem)}-{digest[:12]}"


class Lake:
    """Paths of the data folder, and the landing store of batches."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)

    @property
    def landing_dir(self) -> Path:
        return default_landing_dir(self.data_dir)

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

    def register_batch(self, paths: list[Path]) -> Manifest:
        """Freeze `paths` as one batch: copy their bytes into the landing store.

        Idempotent: the same content registers the same batch and copies nothing
        again. The copy is verified against the hash taken first, so a file that
        changes while being copied is refused rather than frozen half-written.
        """
        if not paths:
            raise ValueError("a batch needs at least one file")
        hashed = [(path, sha256_file(path)) for path in paths]
        batch = batch_key(hashed)
        manifest_path = self.manifest_path(batch)
        if manifest_path.exists():
            return Manifest.from_json(manifest_path.read_bytes())
        entries = []
        for index, (path, digest) in enumerate(hashed):
            name = f"{index:04d}-{path.name}"
            stored = self.batch_dir(batch) / "files" / name
            with atomic_path(stored) as tmp:
                shutil.copyfile(path, tmp)
                if sha256_file(tmp) != digest:
                    raise OSError(f"{path} changed while it was being registered; try again")
            entries.append(
                ManifestEntry(
                    source_path=str(path), name=name, size=stored.stat().st_size, sha256=digest
                )
            )
        fault_point("landing")
        manifest = Manifest(
            batch=batch,
            registered_at=datetime.now(UTC).isoformat(timespec="seconds"),
            files=tuple(entries),
        )
        write_bytes_atomic(manifest_path, manifest.to_json())
        return manifest

    def registered_batches(self) -> list[str]:
        root = self.data_dir / "lake" / "landing_store"
        if not root.exists():
            return []
        return sorted(p.parent.name for p in root.glob("*/manifest.json"))
