"""Whether a dataset's inputs changed since its files were published: skip the build when not.

The fingerprint of a dataset's inputs is a sha256 over everything its lines depend on:
- the settings (`DatasetSpec.settings()`, the PII mode and phone region), the dataset format
  version, the libraries' versions, the source of the dataset code (`code_version`) and the
  text of the `sql/training_dataset_*.sql` files;
- for each partition read: the identity of its normalized layer file, its status file and
  its manifest (size, modification time in ns, inode: every write of the lake is a rename of
  a new file, so a rewrite changes them), and the run that materialized its normalized layer
  (it is in the provenance).

After a publication, `record_publication` keeps the fingerprint with the identity of the files
published and the gate's outcome (`lake/dataset/<name>.published.json`). `unchanged_since`
answers, from `stat` calls and one small file, whether a new build would publish the same
bytes: same fingerprint, and the published files are still the ones written (none removed,
replaced or edited by hand).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from enrichment_assets.dataset.build import (
    FORMAT_VERSION,
    DatasetSpec,
    code_version,
    library_versions,
)
from enrichment_assets.lake import Lake, write_bytes_atomic
from enrichment_assets.sql_files import load_sql

_SQL_FILES = (
    "training_dataset_candidates",
    "training_dataset_texts",
    "training_dataset_lines",
    "training_dataset_chat",
    "training_dataset_provenance",
)
RECORD_VERSION = 1


def _identity(path: Path) -> list[int] | None:
    """(size, mtime ns, inode) of a file, None when it is absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def inputs_fingerprint(
    lake: Lake, spec: DatasetSpec, partitions: list[str], run_ids: Mapping[str, str]
) -> str:
    """The sha256 of everything the dataset's files depend on (see the module docstring)."""
    inputs: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "record_version": RECORD_VERSION,
        "name": spec.name,
        "settings": spec.settings(),
        "phone_region": spec.phone_region,
        "libraries": library_versions(),
        "code": code_version(),
        "sql": {name: hashlib.sha256(load_sql(name).encode()).hexdigest() for name in _SQL_FILES},
        "partitions": [
            [
                partition,
                _identity(lake.layer_path("normalized", partition)),
                _identity(lake.layer_path("status", partition)),
                _identity(lake.manifest_path(partition)),
                run_ids.get(partition),
            ]
            for partition in partitions
        ],
    }
    return hashlib.sha256(orjson.dumps(inputs, option=orjson.OPT_SORT_KEYS)).hexdigest()


def record_path(lake: Lake, name: str) -> Path:
    return lake.data_dir / "lake" / "dataset" / f"{name}.published.json"


@dataclass(frozen=True)
class PublishedRecord:
    """What the last publication of a dataset was built from and wrote."""

    fingerprint: str
    run_id: str
    files: dict[str, list[int] | None]  # file name -> identity when written
    metadata: dict[str, Any]  # counts and the like, for the skipped run's metadata
    checks: list[dict[str, Any]]  # {check_name, passed, severity} of the build's gate


def record_publication(
    lake: Lake,
    name: str,
    folder: Path,
    files: list[str],
    *,
    fingerprint: str,
    run_id: str,
    metadata: Mapping[str, Any],
    checks: list[dict[str, Any]],
) -> None:
    """Keep what this publication was built from, and the identity of each file written."""
    record = {
        "version": RECORD_VERSION,
        "fingerprint": fingerprint,
        "run_id": run_id,
        "files": {file: _identity(folder / file) for file in files},
        "metadata": dict(metadata),
        "checks": checks,
    }
    target = record_path(lake, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, orjson.dumps(record, option=orjson.OPT_INDENT_2))


def forget_publication(lake: Lake, name: str) -> None:
    """The next build of `name` does the work whatever its fingerprint."""
    record_path(lake, name).unlink(missing_ok=True)


def unchanged_since(
    lake: Lake, name: str, folder: Path, fingerprint: str
) -> PublishedRecord | None:
    """The last publication's record when the inputs have this fingerprint and its files are
    still the ones it wrote (a build would then publish the same bytes); else None."""
    try:
        record = orjson.loads(record_path(lake, name).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    if record.get("version") != RECORD_VERSION or record.get("fingerprint") != fingerprint:
        return None
    files: dict[str, list[int] | None] = record.get("files") or {}
    if not files or any(_identity(folder / f) != identity for f, identity in files.items()):
        return None
    return PublishedRecord(
        fingerprint=fingerprint,
        run_id=record["run_id"],
        files=files,
        metadata=record.get("metadata") or {},
        checks=record.get("checks") or [],
    )
