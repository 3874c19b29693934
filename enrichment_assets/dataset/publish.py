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
from collections.abc import Iterator
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
from enrichment_assets.lake import Lake
from enrichment_assets.sql_files import load_sql

FILES = ("train.jsonl", "validation.jsonl", "provenance.jsonl")
MANIFEST = "manifest.json"


def dataset_dir(lake: Lake, name: str) -> Path:
    return lake.data_dir / "export" / "dataset" / name


@dataclass(frozen=True)
class Publication:
    """What was written: the folder, each file's path, and which files changed."""

    folder: Path
    paths: dict[str, Path]
    changed: list[str]
    manifest: dict[str, Any]


def _temporary(folder: Path, name: str) -> Path:
    # Created exclusively with the default mode (the user's umask), as any new file would be.
    tmp = folder / f".{name}.{secrets.token_hex(8)}.tmp"
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


def publish_dataset(lake: Lake, spec: DatasetSpec, staged: StagedDataset) -> Publication:
    """Write the dataset's files from the staged lines (see the module docstring)."""
    folder = dataset_dir(lake, spec.name)
    folder.mkdir(parents=True, exist_ok=True)
    with _publishing(folder):
        return _publish(folder, spec, staged)


def _publish(folder: Path, spec: DatasetSpec, staged: StagedDataset) -> Publication:
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
        changed = [
            name
            for name in (*FILES, MANIFEST)
            if _replace_if_changed(temporary[name], folder / name)
        ]
    finally:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
    return Publication(
        folder=folder,
        paths={name: folder / name for name in (*FILES, MANIFEST)},
        changed=changed,
        manifest=manifest,
    )
