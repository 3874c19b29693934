"""The files a command is given: which are input, and their landing as batches.

Kept free of Dagster, so that the command line can land its files while Dagster loads.

Every file named, or found under a folder named, is landed as its own batch, by
content (`landing_store.register_batch`): bytes already landed are not landed again,
and the command runs the partition that holds them. The files that cannot be read at all
(not a regular file, unreadable, empty, binary, not JSON text) are landed too, in
one batch, one row each with its problem, so that they are counted and quarantined
like any bad record; the files beside them go on. Only a path that does not exist
lands nothing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from enrichment_assets.ingest.files import (
    UNREADABLE_FILE,
    VANISHED_FILE,
    FileProblem,
    FileProblemError,
    content_problem,
    dangling_or_loop,
    escape_name,
    not_regular,
    open_regular,
    problem_of_os_error,
)
from enrichment_assets.lake import Lake, sha256_stream
from enrichment_assets.landing_store import (
    FileChangedError,
    Registration,
    SourceFile,
    register_batch,
)

# Files that are never input: still being written, or hidden.
SKIPPED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")


class InputError(Exception):
    """No input at all; the message is one line for people."""


def is_candidate(path: Path) -> bool:
    return not path.name.startswith(".") and not path.name.endswith(SKIPPED_SUFFIXES)


@dataclass
class FoundInputs:
    """The files to land, and the paths named that do not exist (one line each)."""

    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def expand_inputs(paths: Iterable[Path]) -> FoundInputs:
    """The files named, or every file under the folders named, in a stable order.

    Under a folder: every entry that is not a folder, hidden or temporary (FIFOs and
    broken links included: they become rows with their problem); links to folders
    are not followed. Raises InputError when there is nothing at all to land.
    """
    paths = list(paths)
    found = FoundInputs()
    for path in paths:
        if os.path.isdir(path):
            found.files.extend(_walk(path))
        elif os.path.lexists(path):  # a file, a FIFO, a link (even a broken one)
            found.files.append(path)
        else:
            found.missing.append(f"{escape_name(path)}: no such file or folder")
    if not found.files and not found.missing:
        raise InputError("no input files found in " + ", ".join(escape_name(p) for p in paths))
    if not found.files:
        raise InputError("; ".join(found.missing))
    return found


def _walk(folder: Path) -> list[Path]:
    files = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(d for d in folders if not d.startswith("."))
        files.extend(Path(root, name) for name in sorted(names) if is_candidate(Path(name)))
    return files


def inspect_file(
    path: Path, *, display: str | None = None, follow_symlinks: bool = True
) -> SourceFile:
    """What landing needs to know of one file: its kind, content hash and any problem.

    Never opens anything but a regular file, never blocks on a FIFO. The path kept
    for the copy is the real path (the copy then refuses a link put there meanwhile).
    """
    display = escape_name(path) if display is None else display
    try:
        mode = (os.stat if follow_symlinks else os.lstat)(path).st_mode
    except FileNotFoundError:
        problem = dangling_or_loop(path) or FileProblem(
            VANISHED_FILE, "vanished before it could be read"
        )
        return _problem_file(path, display, problem)
    except OSError as error:
        return _problem_file(path, display, problem_of_os_error(error))
    if not stat.S_ISREG(mode):
        return _problem_file(path, display, not_regular(mode))
    try:
        fd = open_regular(path, follow_symlinks=follow_symlinks)
    except FileProblemError as error:
        return _problem_file(path, display, error.problem)
    try:
        with os.fdopen(fd, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            problem = content_problem(stream)
            stream.seek(0)
            sha256 = sha256_stream(stream)
    except OSError as error:
        return _problem_file(path, display, problem_of_os_error(error))
    real = Path(os.path.realpath(path))
    if problem is not None:
        return SourceFile(real, display, size, sha256, problem.rule, problem.reason)
    return SourceFile(real, display, size, sha256)


def _problem_file(path: Path, display: str, problem: FileProblem) -> SourceFile:
    return SourceFile(path, display, 0, None, problem.rule, problem.reason)


@dataclass
class LandingReport:
    """What landing a command's files did, for the command to tell."""

    partitions: list[str] = field(default_factory=list)  # to run, in order, once each
    notes: list[str] = field(default_factory=list)  # bytes already landed: where
    problems: list[str] = field(default_factory=list)  # files that could not be read


def land_inputs(lake: Lake, files: list[Path]) -> LandingReport:
    """Land each readable file as its own batch, by content, and the files that cannot
    be read together as one more batch (one row each); one line per note and problem."""
    report = LandingReport()
    problems: list[SourceFile] = []
    for path in files:
        source = inspect_file(path)
        if source.rule is not None:
            problems.append(source)
            continue
        try:
            registration = register_batch(lake, [source])
        except FileChangedError as error:
            reason = str(error).removeprefix(f"{source.display} ")
            rule = VANISHED_FILE if "vanished" in reason else UNREADABLE_FILE
            problems.append(replace(source, sha256=None, rule=rule, error=reason))
            continue
        _tell(report, [source], registration)
    if problems:
        _tell(report, problems, register_batch(lake, problems))
    return report


def _tell(report: LandingReport, sources: list[SourceFile], registration: Registration) -> None:
    for source in sources:
        batch = registration.batch_of(source.display)
        if source.display in registration.known:
            report.notes.append(f"{source.display}: already landed, in partition {batch}")
        if source.rule is not None:
            report.problems.append(f"{source.display}: {source.error} (partition {batch})")
        if batch not in report.partitions:
            report.partitions.append(batch)


def register_files(lake: Lake, files: list[Path]) -> list[str]:
    """Land each file as its own batch; the partition key of each, in order."""
    keys = []
    for path in files:
        report = land_inputs(lake, [path])
        keys.extend(report.partitions)
    return keys
