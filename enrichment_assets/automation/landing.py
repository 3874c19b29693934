"""What the `new_raw_files` sensor sees in the landing folder, without Dagster.

A scan lists the files that are ready (settled, not temporary, not hidden) and
that the cursor has not handled yet; `group_into_batches` packs them into batch
partitions within the file and byte limits; `ManifestIndex` answers "is this
content already registered?" from the landing store's manifests, so the answer
survives a restart or a reset cursor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from enrichment_assets.inputs import is_candidate
from enrichment_assets.lake import Lake, Manifest

CURSOR_VERSION = 1


@dataclass(frozen=True)
class LandedFile:
    """A file of the landing folder, as one scan saw it."""

    path: Path
    relative: str  # path under the landing folder: the cursor's key
    size: int
    mtime_ns: int

    @property
    def signature(self) -> list[int]:
        return [self.size, self.mtime_ns]


@dataclass
class LandingCursor:
    """Files already handled (registered, known content, or unreadable) by size and mtime.

    Only a shortcut: a file whose size or mtime changed is looked at again, and a
    lost cursor only costs hashing, never a duplicate (see `ManifestIndex`).
    """

    handled: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return cls()
        if not isinstance(data, dict) or data.get("v") != CURSOR_VERSION:
            return cls()
        return cls(handled=dict(data.get("handled", {})))

    def serialize(self) -> str:
        return orjson.dumps(
            {"v": CURSOR_VERSION, "handled": self.handled}, option=orjson.OPT_SORT_KEYS
        ).decode()

    def is_handled(self, landed: LandedFile) -> bool:
        return self.handled.get(landed.relative) == landed.signature

    def mark(self, landed: LandedFile) -> None:
        self.handled[landed.relative] = landed.signature

    def forget_missing(self, present: set[str]) -> None:
        """Drop files that left the landing folder, so the cursor stays small."""
        self.handled = {k: v for k, v in self.handled.items() if k in present}


@dataclass
class LandingScan:
    ready: list[LandedFile]  # settled, not yet handled: oldest first
    settling: list[LandedFile]  # modified within the settle time: still being written
    present: set[str]  # every candidate file, for pruning the cursor


def scan_landing(
    landing_dir: Path, cursor: LandingCursor, *, now: float, settle_seconds: float
) -> LandingScan:
    """Candidate files under `landing_dir` (recursively), split into ready and settling.

    Skipped outright: dotfiles, files under dot-folders, temporary suffixes
    (`inputs.SKIPPED_SUFFIXES`: .tmp, .part, ...), and files the cursor handled.
    """
    ready: list[LandedFile] = []
    settling: list[LandedFile] = []
    present: set[str] = set()
    if not landing_dir.is_dir():
        return LandingScan(ready, settling, present)
    for path in landing_dir.rglob("*"):
        relative = path.relative_to(landing_dir)
        if any(part.startswith(".") for part in relative.parts) or not is_candidate(path):
            continue
        try:
            stat = path.stat()
        except OSError:  # removed between listing and stat
            continue
        if not path.is_file():
            continue
        landed = LandedFile(path, relative.as_posix(), stat.st_size, stat.st_mtime_ns)
        present.add(landed.relative)
        if cursor.is_handled(landed):
            continue
        if now - stat.st_mtime_ns / 1e9 < settle_seconds:
            settling.append(landed)
        else:
            ready.append(landed)
    ready.sort(key=lambda f: (f.mtime_ns, f.relative))
    return LandingScan(ready, settling, present)


def group_into_batches(
    files: list[LandedFile], *, max_files: int, max_bytes: int
) -> list[list[LandedFile]]:
    """Pack files, in order, into batches of at most `max_files` and `max_bytes`.

    A file bigger than `max_bytes` is a batch on its own.
    """
    batches: list[list[LandedFile]] = []
    current: list[LandedFile] = []
    size = 0
    for landed in files:
        if current and (len(current) >= max_files or size + landed.size > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(landed)
        size += landed.size
    if current:
        batches.append(current)
    return batches


@dataclass
class ManifestIndex:
    """Content hashes and source paths of every registered batch, from the manifests."""

    batch_of_hash: dict[str, str]
    latest_by_source: dict[str, tuple[str, str]]  # source path -> (batch, sha256)

    @classmethod
    def load(cls, lake: Lake) -> ManifestIndex:
        manifests: list[Manifest] = []
        for batch in lake.registered_batches():
            try:
                manifests.append(lake.load_manifest(batch))
            except (OSError, ValueError, KeyError):  # unreadable manifest: not registered
                continue
        manifests.sort(key=lambda m: (m.registered_at, m.batch))
        batch_of_hash: dict[str, str] = {}
        latest_by_source: dict[str, tuple[str, str]] = {}
        for manifest in manifests:
            for entry in manifest.files:
                batch_of_hash.setdefault(entry.sha256, manifest.batch)
                latest_by_source[str(Path(entry.source_path).resolve())] = (
                    manifest.batch,
                    entry.sha256,
                )
        return cls(batch_of_hash, latest_by_source)
