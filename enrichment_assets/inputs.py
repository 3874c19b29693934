"""The files a command is given: which are input, and their landing as batches.

Kept free of Dagster, so that the command line can land its files while Dagster loads.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from enrichment_assets.ingest import sniff_unreadable
from enrichment_assets.lake import Lake

# Files that are never input: still being written, or hidden.
SKIPPED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")


class InputError(Exception):
    """An input that cannot be read at all; the message is one line for people."""


def is_candidate(path: Path) -> bool:
    return not path.name.startswith(".") and not path.name.endswith(SKIPPED_SUFFIXES)


def expand_inputs(paths: Iterable[Path]) -> list[Path]:
    """The files named, or every file under the folders named, in a stable order.

    Raises InputError for a path that does not exist or a file that is not JSON text.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_candidate(p)))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    for file in files:
        reason = sniff_unreadable(file)
        if reason is not None:
            raise InputError(f"{file}: cannot be read: {reason}")
    if not files:
        raise InputError("no input files found in " + ", ".join(str(p) for p in paths))
    return files


def register_files(lake: Lake, files: list[Path]) -> list[str]:
    """Freeze each file as its own batch in the landing store; returns the batch keys."""
    return [lake.register_batch([file]).batch for file in files]
