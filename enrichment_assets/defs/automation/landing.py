"""What the `new_raw_files` sensor sees in the landing folder, without Dagster.

A scan lists the files that are ready (settled, not temporary, not hidden) and
that the cursor has not handled yet; `group_into_batches` packs them into batch
partitions within the file and byte limits. Whether some content is already
registered is the content index's answer (`landing_store.ContentIndex`), so it
survives a restart or a reset cursor.

Confinement: the scan never leaves the landing folder. Folders are walked without
following links; a symbolic link is followed only when its real path is inside the
folder; a link that resolves outside is refused (never opened, never stat'ed), as
are dangling links, link loops and anything that is not a regular file (FIFOs,
sockets, devices). Each refused entry is reported once (the cursor remembers it),
and one bad entry never fails a scan. Names are kept escaped (`escape_name`), so any
bytes the filesystem allows are a valid name.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from enrichment_assets.ingest.files import escape_name, file_type_name
from enrichment_assets.inputs import is_candidate
from enrichment_assets.packing import chunk_bounds

CURSOR_VERSION = 1


@dataclass(frozen=True)
class LandedFile:
    """A regular file of the landing folder, as one scan saw it."""

    path: Path  # as found under the landing folder (a link's own path)
    real: Path  # its real path, inside the landing folder: what is read
    relative: str  # escaped path under the landing folder: the cursor's key
    size: int
    mtime_ns: int

    @property
    def signature(self) -> list[int]:
        return [self.size, self.mtime_ns]


@dataclass(frozen=True)
class RefusedEntry:
    """An entry of the landing folder that is never read, and why (one line)."""

    relative: str
    signature: list[int]  # of the entry itself (lstat), so a change is looked at again
    reason: str


@dataclass
class LandingCursor:
    """Entries already handled (registered, known content, unreadable or refused), by
    size and mtime.

    Only a shortcut: a file whose size or mtime changed is looked at again, and a
    lost cursor only costs hashing (and repeated warnings), never a duplicate.
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

    def mark(self, landed: LandedFile | RefusedEntry) -> None:
        self.handled[landed.relative] = landed.signature

    def forget_missing(self, present: set[str]) -> None:
        """Drop files that left the landing folder, so the cursor stays small."""
        self.handled = {k: v for k, v in self.handled.items() if k in present}


@dataclass
class LandingScan:
    ready: list[LandedFile]  # settled, not yet handled: oldest first
    settling: list[LandedFile]  # modified within the settle time: still being written
    present: set[str]  # every candidate entry, for pruning the cursor
    refused: list[RefusedEntry] = field(default_factory=list)  # new ones only


def scan_landing(
    landing_dir: Path, cursor: LandingCursor, *, now: float, settle_seconds: float
) -> LandingScan:
    """Candidate files under `landing_dir` (recursively), split into ready and settling.

    Skipped outright: dotfiles, dot-folders, temporary suffixes
    (`inputs.SKIPPED_SUFFIXES`: .tmp, .part, ...), and entries the cursor handled.
    Refused (listed once in `refused`): links that resolve outside the folder,
    dangling links, link loops, and what is not a regular file.
    """
    scan = LandingScan([], [], set())
    if not landing_dir.is_dir():
        return scan
    root = os.path.realpath(landing_dir)
    folders = [landing_dir]
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # removed or unreadable meanwhile: the rest goes on
            continue
        for entry in entries:
            if entry.name.startswith(".") or not is_candidate(Path(entry.name)):
                continue
            try:
                _scan_entry(entry, landing_dir, root, cursor, scan, folders, now, settle_seconds)
            except OSError:  # vanished between listing and looking: not there
                continue
    scan.ready.sort(key=lambda f: (f.mtime_ns, f.relative))
    return scan


def _scan_entry(
    entry: os.DirEntry[str],
    landing_dir: Path,
    root: str,
    cursor: LandingCursor,
    scan: LandingScan,
    folders: list[Path],
    now: float,
    settle_seconds: float,
) -> None:
    path = Path(entry.path)
    if entry.is_dir(follow_symlinks=False):
        folders.append(path)
        return
    relative = escape_name(path.relative_to(landing_dir).as_posix())
    own = entry.stat(follow_symlinks=False)
    signature = [own.st_size, own.st_mtime_ns]
    scan.present.add(relative)
    if cursor.handled.get(relative) == signature and not entry.is_symlink():
        return
    real = entry.path
    info = own
    if entry.is_symlink():
        refusal = None
        try:
            real = os.path.realpath(entry.path, strict=True)
        except OSError as error:
            loop = error.errno == errno.ELOOP
            refusal = "a symbolic link loop" if loop else "a dangling symbolic link"
        if refusal is None and os.path.commonpath([root, real]) != root:
            refusal = "a symbolic link to outside the landing folder: refused, not read"
        if refusal is not None:
            if cursor.handled.get(relative) != signature:
                scan.refused.append(RefusedEntry(relative, signature, f"skipped: {refusal}"))
            return
        info = os.stat(real)  # inside the landing folder: safe to look at
        if stat.S_ISDIR(info.st_mode):
            return  # its files are reached by their own paths
    if not stat.S_ISREG(info.st_mode):
        if cursor.handled.get(relative) != signature:
            reason = f"skipped: not a regular file ({file_type_name(info.st_mode)})"
            scan.refused.append(RefusedEntry(relative, signature, reason))
        return
    landed = LandedFile(path, Path(real), relative, info.st_size, info.st_mtime_ns)
    if cursor.is_handled(landed):
        return
    if now - info.st_mtime_ns / 1e9 < settle_seconds:
        scan.settling.append(landed)
    else:
        scan.ready.append(landed)


def group_into_batches(
    files: list[LandedFile], *, max_files: int, max_bytes: int
) -> list[list[LandedFile]]:
    """Pack files, in order, into batches of at most `max_files` and `max_bytes`.

    A file bigger than `max_bytes` is a batch on its own.
    """
    bounds = chunk_bounds([landed.size for landed in files], max_files, max_bytes)
    return [files[start:end] for start, end in bounds if end > start]
