"""The staged dataset written as `export/dataset/<name>/`, file by file, only where it changed.

    train.jsonl        OpenAI chat format, one {"messages": [{"role", "content"}]} per line
    validation.jsonl   the same, for the validation split
    provenance.jsonl   one line per dataset line: train.jsonl's lines, then validation.jsonl's
    manifest.json      counts removed by each step, the settings, the versions used, and the
                       line count and sha256 of each file above

Each file is written beside its target and renamed onto it (atomic), and only when its bytes
differ from the file already there: an unchanged dataset leaves every file as it was, modified
time included. The manifest goes last; its sha256s say which files belong together.
"""

from __future__ import annotations

import fcntl
import filecmp
import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson

from enrichment_assets.dataset.build import (
    FORMAT_VERSION,
    REMOVAL_STEPS,
    DatasetSpec,
    StagedDataset,
    library_versions,
)
from enrichment_assets.lake import HOST_TAG, Lake
from enrichment_assets.sql_files import load_sql

FILES = ("train.jsonl", "validation.jsonl", "provenance.jsonl")
MANIFEST = "manifest.json"
# Held while the files of one publication are renamed into place (milliseconds): a command
# that is interrupted takes it before it exits, so that it never leaves the files of two
# builds mixed (`enrich run`'s interrupt handler).
RENAMING = threading.Lock()


def dataset_dir(lake: Lake, name: str) -> Path:
    return lake.data_dir / "export" / "dataset" / name


@dataclass(frozen=True)
class Publication:
    """What was written: the folder, each file's path, and which files changed."""

    folder: Path
    paths: dict[str, Path]
    changed: list[str]
    manifest: dict[str, Any]
    stale: bool = False  # the inputs changed while it was built: nothing was published


def _temporary(folder: Path, name: str) -> Path:
    # Named as `lake.hidden_temp` names them, after this process (an interrupt removes it, the
    # next command removes it when its writer died); created exclusively with the default
    # mode (the user's umask), as any new file would be.
    tag = hashlib.sha256(os.fsencode(name)).hexdigest()[:10]
    tmp = folder / f".{tag}.{HOST_TAG}-{os.getpid()}-{secrets.token_hex(8)}.tmp"
    tmp.touch(exist_ok=False)
    return tmp


def _digest(path: Path) -> tuple[str, int]:
    """(sha256 hex, lines) of a file."""
    digest, lines = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            lines += block.count(b"\n")
    return digest.hexdigest(), lines


def _replace_if_changed(tmp: Path, target: Path) -> bool:
    if target.is_file() and filecmp.cmp(tmp, target, shallow=False):
        tmp.unlink()
        return False
    os.replace(tmp, target)
    return True


def build_manifest(
    spec: DatasetSpec, staged: StagedDataset, files: dict[str, tuple[str, int]]
) -> dict[str, Any]:
    """The manifest: deterministic for the same lines and settings (no clock in it)."""
    counts = staged.counts
    return {
        "name": spec.name,
        "format_version": FORMAT_VERSION,
        "files": {name: {"lines": lines, "sha256": sha} for name, (sha, lines) in files.items()},
        "provenance_order": ["train", "validation"],
        "counts": {
            "completed": counts["completed"],
            "removed": {step: counts[step] for step in REMOVAL_STEPS},
            "kept": counts["kept"],
            "train": counts["train"],
            "validation": counts["validation"],
        },
        "settings": spec.settings(),
        "pii": {
            "mode": spec.pii_mode,
            "phone_region": spec.phone_region,
            "redacted": staged.redacted,
            "redacted_conversations": staged.redacted_conversations,
        },
        "versions": {
            "dataset_format": FORMAT_VERSION,
            "libraries": library_versions(),
            "annotations": staged.annotation_sources,
        },
        "partitions": staged.partitions,
    }


@contextmanager
def _publishing(folder: Path) -> Iterator[None]:
    """One publication of a dataset at a time (the automation and `enrich run` may both build
    it): the files of one build are never mixed with another's."""
    with (folder / ".publish.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def publish_dataset(
    lake: Lake,
    spec: DatasetSpec,
    staged: StagedDataset,
    on_published: Callable[[Publication], None] | None = None,
    is_current: Callable[[], bool] | None = None,
) -> Publication:
    """Write the dataset's files from the staged lines (see the module docstring);
    `on_published` runs once they are in place, before another build may publish.

    `is_current()` is asked under the publication lock, before anything is renamed: False
    (the inputs changed while this build read them: a newer build follows) publishes nothing,
    so a slow build never replaces the files of a newer one."""
    folder = dataset_dir(lake, spec.name)
    folder.mkdir(parents=True, exist_ok=True)
    with _publishing(folder):
        return _publish(folder, spec, staged, on_published, is_current)


def _publish(
    folder: Path,
    spec: DatasetSpec,
    staged: StagedDataset,
    on_published: Callable[[Publication], None] | None,
    is_current: Callable[[], bool] | None,
) -> Publication:
    temporary = {name: _temporary(folder, name) for name in (*FILES, MANIFEST)}
    try:
        with duckdb.connect() as con:
            source = str(staged.path)
            con.execute(
                load_sql("training_dataset_chat"), [source, str(temporary["train.jsonl"]), "train"]
            )
            con.execute(
                load_sql("training_dataset_chat"),
                [source, str(temporary["validation.jsonl"]), "validation"],
            )
            con.execute(
                load_sql("training_dataset_provenance"),
                [source, str(temporary["provenance.jsonl"])],
            )
        files = {name: _digest(temporary[name]) for name in FILES}
        manifest = build_manifest(spec, staged, files)
        temporary[MANIFEST].write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
        if is_current is not None and not is_current():
            return Publication(
                folder=folder,
                paths={name: folder / name for name in (*FILES, MANIFEST)},
                changed=[],
                manifest=manifest,
                stale=True,
            )
        with RENAMING:
            changed = [
                name
                for name in (*FILES, MANIFEST)
                if _replace_if_changed(temporary[name], folder / name)
            ]
            publication = Publication(
                folder=folder,
                paths={name: folder / name for name in (*FILES, MANIFEST)},
                changed=changed,
                manifest=manifest,
            )
            if on_published is not None:
                on_published(publication)
    finally:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
    return publication
