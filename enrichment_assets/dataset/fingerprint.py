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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from enrichment_assets.dataset.build import (
    FORMAT_VERSION,
    DatasetSpec,
    code_version,
    library_versions,
)
from enrichment_assets.fingerprints import (
    RECORD_VERSION,
    PublishedRecord,
    identity,
    unchanged_record,
    write_record,
)
from enrichment_assets.lake import Lake
from enrichment_assets.sql_files import load_sql

_SQL_FILES = (
    "training_dataset_candidates",
    "training_dataset_texts",
    "training_dataset_lines",
    "training_dataset_chat",
    "training_dataset_provenance",
)


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
                identity(lake.layer_path("normalized", partition)),
                identity(lake.layer_path("status", partition)),
                identity(lake.manifest_path(partition)),
                run_ids.get(partition),
            ]
            for partition in partitions
        ],
    }
    return hashlib.sha256(orjson.dumps(inputs, option=orjson.OPT_SORT_KEYS)).hexdigest()


def record_path(lake: Lake, name: str) -> Path:
    return lake.data_dir / "lake" / "dataset" / f"{name}.published.json"


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
    write_record(
        record_path(lake, name),
        {file: folder / file for file in files},
        fingerprint=fingerprint,
        run_id=run_id,
        metadata=metadata,
        checks=checks,
    )


def forget_publication(lake: Lake, name: str) -> None:
    """The next build of `name` does the work whatever its fingerprint."""
    record_path(lake, name).unlink(missing_ok=True)


def unchanged_since(
    lake: Lake, name: str, folder: Path, fingerprint: str
) -> PublishedRecord | None:
    """The last publication's record when the inputs have this fingerprint and its files are
    still the ones it wrote (a build would then publish the same bytes); else None."""
    return unchanged_record(record_path(lake, name), fingerprint, lambda file: folder / file)
