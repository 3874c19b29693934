"""Freezing input files as batches in the landing store, by content.

`enrich run`, `enrich demo` and the `new_raw_files` sensor all land through
`register_batch`, which consults one `ContentIndex` (sha256 of each file -> the batch
holding those bytes): bytes already landed are never registered again, whatever the
file's name or folder. Landers in several processes at once take a lock per content
hash (`flock`, released by the kernel if a lander dies), so the same bytes are
landed once; a lookup reads one small file, never the manifests. Files in the store
are named after their hash, never after the user's file name.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from enrichment_assets.faults import fault_point
from enrichment_assets.lake import Lake, Manifest, ManifestEntry, atomic_path, write_bytes_atomic

_COPY_CHUNK = 1 << 20


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40] or "batch"


@dataclass(frozen=True)
class SourceFile:
    """A file about to be landed: where it is, its name for records, what it holds.

    `rule`/`error` set: it cannot be read at all (`ingest.files.FileProblem`); it is
    landed as a manifest entry without a copy. `sha256` is None only for a file
    without readable content (unreadable, vanished, not a regular file).
    """

    path: Path
    display: str  # the path as given, escaped: lossless, valid UTF-8, inert on a terminal
    size: int
    sha256: str | None
    rule: str | None = None
    error: str | None = None

    @property
    def identity(self) -> str:
        """What the batch key hashes: the content, or the problem of a file without one."""
        if self.sha256 is not None:
            return self.sha256
        return hashlib.sha256(f"{self.rule}\0{self.display}".encode()).hexdigest()


def batch_key(files: list[SourceFile]) -> str:
    """A deterministic, comma-free partition key for these files' contents.

    The key depends on the content only (plus the first file's name, for people),
    so registering the same bytes again names the same batch.
    """
    digest = hashlib.sha256("\n".join(sorted(f.identity for f in files)).encode()).hexdigest()
    stem = Path(files[0].display).name.split(".")[0]
    return f"{_slug(stem)}-{digest[:12]}"


class FileChangedError(OSError):
    """The file's bytes changed (or it vanished) between hashing and copying."""


@dataclass
class Registration:
    """What `register_batch` did: the new batch (None if every file was known) and,
    for each file whose bytes were already landed, the batch that holds them."""

    manifest: Manifest | None
    known: dict[str, str] = field(default_factory=dict)  # display -> batch

    def batch_of(self, display: str) -> str:
        """The batch that holds the file shown as `display`: an earlier one, or the new one."""
        if display in self.known:
            return self.known[display]
        if self.manifest is None:
            raise KeyError(display)
        return self.manifest.batch


class ContentIndex:
    """sha256 of landed bytes -> their batch, one small marker file per hash.

    Under `<landing store>/.index/`: `sha256/<h[:2]>/<h>` holds the batch key;
    `sources/<hash of the source path>` the last landing of each source path (for the
    sensor's "changed after registration" warning). Markers are written after the
    batch's manifest, so a marker always names a complete batch. A lake landed before
    the index existed is indexed once, from its manifests, on first use.
    """

    VERSION = "1"

    def __init__(self, lake: Lake) -> None:
        self.root = lake.data_dir / "lake" / "landing_store" / ".index"
        self._lake = lake
        self._built = False

    def _marker(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def _source_marker(self, display: str) -> Path:
        digest = hashlib.sha256(display.encode()).hexdigest()
        return self.root / "sources" / digest[:2] / digest

    def batch_of(self, sha256: str) -> str | None:
        """The batch whose manifest holds these bytes, or None."""
        self._ensure_built()
        try:
            batch = self._marker(sha256).read_text().strip()
        except FileNotFoundError:
            return None
        return batch if batch and self._lake.manifest_path(batch).exists() else None

    def last_landing_of(self, display: str) -> tuple[str, str] | None:
        """(batch, sha256) of the last landing of this source path, or None."""
        try:
            data = orjson.loads(self._source_marker(display).read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        return data["batch"], data["sha256"]

    @contextmanager
    def locked(self, hashes: list[str]) -> Iterator[None]:
        """Hold the landing lock of each hash (taken in sorted order: no deadlock)."""
        self._ensure_built()
        with ExitStack() as stack:
            for sha256 in sorted(set(hashes)):
                stack.enter_context(_flocked(self._marker(sha256).with_suffix(".lock")))
            yield

    def record(self, manifest: Manifest) -> None:
        """Index every file of a manifest just written (call with their locks held)."""
        for entry in manifest.files:
            if entry.sha256 is not None:
                _write_small(self._marker(entry.sha256), manifest.batch.encode())
            source = {"batch": manifest.batch, "sha256": entry.sha256}
            _write_small(self._source_marker(entry.source_path), orjson.dumps(source))

    def _ensure_built(self) -> None:
        if self._built:
            return
        version = self.root / "VERSION"
        if not version.exists():
            with _flocked(self.root / "build.lock"):
                if not version.exists():
                    self._build_from_manifests()
                    _write_small(version, self.VERSION.encode())
        self._built = True

    def _build_from_manifests(self) -> None:
        manifests = []
        for batch in self._lake.registered_batches():
            try:
                manifests.append(self._lake.load_manifest(batch))
            except (OSError, ValueError, KeyError, TypeError):  # unreadable: not registered
                continue
        # The earliest registration of some bytes is the batch that holds them.
        for manifest in sorted(manifests, key=lambda m: (m.registered_at, m.batch), reverse=True):
            self.record(manifest)


def _copy_hashing(source: Path, target: Path) -> str:
    """Copy `source` (a regular file, its real path) to `target`; the sha256 of what was read.

    Opened without following a last symbolic link and without blocking, and checked to
    be a regular file, so a swap after inspection cannot make us read something else.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(source, flags)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise FileChangedError(f"{source.name!r} cannot be read any more: {error}") from error
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as reader, target.open("wb") as writer:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileChangedError("is no longer a regular file")
        os.set_blocking(fd, True)
        while chunk := reader.read(_COPY_CHUNK):
            digest.update(chunk)
            writer.write(chunk)
    return digest.hexdigest()


@contextmanager
def _flocked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_small(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)


def register_batch(lake: Lake, files: list[SourceFile]) -> Registration:
    """Freeze `files` as one batch of `lake`: copy their bytes into its landing store.

    Landing by content: a file whose bytes are already landed (here or by another
    process at the same moment) is not registered again; `Registration.known` says
    which batch holds it. The copy is verified against the hash taken first
    (FileChangedError when the file changed or vanished meanwhile, and nothing
    is registered). A file with a problem is recorded without a copy.
    """
    if not files:
        raise ValueError("a batch needs at least one file")
    index = ContentIndex(lake)
    with index.locked([f.sha256 for f in files if f.sha256 is not None]):
        registration = Registration(None)
        fresh: dict[str, SourceFile] = {}
        for file in files:
            holder = index.batch_of(file.sha256) if file.sha256 is not None else None
            if holder is not None:
                registration.known[file.display] = holder
            elif file.identity in fresh:  # the same bytes twice in this batch
                registration.known[file.display] = ""
            else:
                fresh[file.identity] = file
        if not fresh:
            return registration
        batch = batch_key(list(fresh.values()))
        for display, holder in registration.known.items():
            registration.known[display] = holder or batch
        manifest_path = lake.manifest_path(batch)
        if manifest_path.exists():  # e.g. the same unreadable files, again
            registration.manifest = Manifest.from_json(manifest_path.read_bytes())
            index.record(registration.manifest)
            return registration
        try:
            entries = [
                _freeze(lake, batch, number, file) for number, file in enumerate(fresh.values())
            ]
        except OSError:
            # No manifest, no batch: leave no half-frozen copies behind.
            shutil.rmtree(lake.batch_dir(batch) / "files", ignore_errors=True)
            raise
        fault_point("landing")
        manifest = Manifest(
            batch=batch,
            # Microseconds: the landing order decides which version of a conversation is
            # the newest (identity.py), also between files landed by one command.
            registered_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            files=tuple(entries),
        )
        write_bytes_atomic(manifest_path, manifest.to_json())
        index.record(manifest)
    registration.manifest = manifest
    return registration


def _freeze(lake: Lake, batch: str, number: int, file: SourceFile) -> ManifestEntry:
    if file.rule is not None or file.sha256 is None:
        return ManifestEntry(
            file.display, None, file.size, file.sha256, file.rule, file.error or "unreadable"
        )
    # Named after the content, never after the user's file name.
    name = f"{number:04d}-{file.sha256[:16]}"
    stored = lake.batch_dir(batch) / "files" / name
    with atomic_path(stored) as tmp:
        try:
            copied = _copy_hashing(file.path, tmp)
        except FileNotFoundError as error:
            raise FileChangedError(f"{file.display} vanished while being landed") from error
        if copied != file.sha256:
            raise FileChangedError(f"{file.display} changed while being landed; try again")
    return ManifestEntry(file.display, name, stored.stat().st_size, file.sha256)
