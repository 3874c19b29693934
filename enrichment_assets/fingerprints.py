"""Fingerprints of what a piece of work is computed from, and records of what it published.

Unchanged input costs nothing: a batch partition, a summary day or a dataset whose inputs
have the fingerprint of its last successful build is not computed again, and its files
are not rewritten. A fingerprint is a sha256 over everything the output depends on:

- `code_fingerprint`: the package's files, `sql/` and `expectations/` (any edit, a new
  release, a changed seed file: a new fingerprint);
- `settings_fingerprint`: the `ENRICH_*` environment (enricher, model, endpoint, limits,
  PII mode, summary windows, application database...), secrets, local folders, worker
  counts and timeouts left out (changing them changes no output);
- the work's own inputs (a batch's manifest, the rows of a summary day...).

After a publication, `write_record` keeps the fingerprint, the run, the identity of each
file written and the gate's outcome (`*.published.json`); `unchanged_record` answers, from
`stat` calls and one small file, whether a new build would publish the same bytes: same
fingerprint, and the published files are still the ones written (none removed, replaced
or edited by hand). No Dagster here.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from enrichment_assets import settings as env_settings
from enrichment_assets.lake import write_bytes_atomic

PACKAGE_DIR = Path(__file__).resolve().parent
_CODE_DIRS = (PACKAGE_DIR, PACKAGE_DIR.parent / "sql", PACKAGE_DIR.parent / "expectations")
# Secrets (a rotated key changes no output), local folders (the data folder is an input
# of its own where it matters), how much runs at once and how long to wait. Endpoints and
# database URLs count: another application database must receive the rows too.
_SECRETS = ("KEY", "SECRET", "PASSWORD", "TOKEN")
_LOCATIONS_AND_PACE = ("_DIR", "_WORKERS", "_CONCURRENCY", "_S")
RECORD_VERSION = 1


@functools.cache
def code_fingerprint() -> str:
    """sha256 of the package's files, the SQL and the expectation suites (byte-code aside)."""
    digest = hashlib.sha256()
    for folder in _CODE_DIRS:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(str(path.relative_to(folder.parent)).encode() + b"\0")
                digest.update(path.read_bytes())
    return digest.hexdigest()


def settings_fingerprint() -> dict[str, str]:
    """The `ENRICH_*` settings an output may depend on (secrets, local folders, worker
    counts and timeouts left out)."""
    return {
        name: value
        for name, value in sorted(env_settings.environment().items())
        if name.startswith("ENRICH_")
        and not any(part in name for part in _SECRETS)
        and not name.endswith(_LOCATIONS_AND_PACE)
    }


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """sha256 of `inputs` with the code and the settings."""
    payload = {"inputs": inputs, "code": code_fingerprint(), "settings": settings_fingerprint()}
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def identity(path: Path) -> list[int] | None:
    """(size, mtime ns, inode) of a file, None when it is absent: every write of the lake is
    a rename of a new file, so a rewrite changes it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


@dataclass(frozen=True)
class PublishedRecord:
    """What the last publication was built from and wrote."""

    fingerprint: str
    run_id: str
    files: dict[str, list[int] | None]  # file name -> identity when written
    metadata: dict[str, Any]  # counts and the like, for the skipped run's metadata
    checks: list[dict[str, Any]]  # {check_name, passed, severity} of the build's gate


def write_record(
    target: Path,
    files: Mapping[str, Path],
    *,
    fingerprint: str,
    run_id: str,
    metadata: Mapping[str, Any],
    checks: list[dict[str, Any]],
) -> None:
    """Keep what this publication was built from, and the identity of each file written
    ({name: path}; an absent file is recorded absent)."""
    record = {
        "version": RECORD_VERSION,
        "fingerprint": fingerprint,
        "run_id": run_id,
        "files": {name: identity(path) for name, path in files.items()},
        "metadata": dict(metadata),
        "checks": checks,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, orjson.dumps(record, option=orjson.OPT_INDENT_2))


def unchanged_record(
    target: Path, fingerprint: str, locate: Callable[[str], Path]
) -> PublishedRecord | None:
    """The record at `target` when it has this fingerprint and each file it names (found by
    `locate(name)`) is still the one it wrote (a build would then publish the same bytes);
    else None."""
    try:
        record = orjson.loads(target.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    if record.get("version") != RECORD_VERSION or record.get("fingerprint") != fingerprint:
        return None
    recorded: dict[str, list[int] | None] = record.get("files") or {}
    if not recorded or any(identity(locate(name)) != known for name, known in recorded.items()):
        return None
    return PublishedRecord(
        fingerprint=fingerprint,
        run_id=record["run_id"],
        files=recorded,
        metadata=record.get("metadata") or {},
        checks=record.get("checks") or [],
    )
