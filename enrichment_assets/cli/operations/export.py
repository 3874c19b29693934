"""`enrich export`: the lake's documents, in the format a team asks for, on demand.

Kinds (`--what`) and where they come from:
- `raw`: every landed record as it arrived (DuckDB over the raw and status Parquet);
- `enriched`: the enriched documents of completed conversations (the per-partition
  exports, `export/enriched/<partition>.jsonl`);
- `training`: the same conversations' messages only, ready for fine-tuning;
- `quarantine`: rejected records with their validation report.

Formats (`--format`): `jsonl` (one file, one document per line), `json` (a folder,
one pretty-printed file per conversation), `openai` (`{"messages": [{role,
content}]}` lines) and `sharegpt` (`{"conversations": [{from, value}]}` lines).

Where the files go is the operator's choice, so it is checked before anything is
read (`check_target`): a new path, or an existing regular file (folder for `json`)
that `--force` allows to be replaced; never a device, FIFO, socket or symbolic link,
which a rename would replace with a regular file. Every file is written atomically,
created with the user's umask; a replaced file keeps its permission bits. In `json`
a conversation id names its file only when it is a plain file name; any other id is
a readable prefix and a hash (`file_stem`), so ids never reach the filesystem as paths.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import orjson

from enrichment_assets.cli.operations import OperationError, OperationUsageError
from enrichment_assets.exports import receipt_lines
from enrichment_assets.lake import Lake
from enrichment_assets.queries import known_partitions

KINDS = ("raw", "enriched", "training", "quarantine")
FORMATS = ("jsonl", "json", "openai", "sharegpt")
# Which formats each kind can be written in: raw and rejected records are not chat data.
KIND_FORMATS = {
    "raw": ("jsonl", "json"),
    "enriched": FORMATS,
    "training": FORMATS,
    "quarantine": ("jsonl", "json"),
}
# The only status a kind's documents can have (None: any).
KIND_STATUS = {
    "raw": None,
    "enriched": "completed",
    "training": "completed",
    "quarantine": "validation_failed",
}
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}
# Rows fetched from DuckDB at a time when writing one file per raw record.
FETCH_ROWS = 10_000
# An id is its own file name only when it is this plain (every UUID is); the longest
# name written is then under 255 bytes even with a partition and a counter added.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_PREFIX_CHARS = 40
_NODE_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)

_RAW_SELECT = """
SELECT
    r.partition,
    r.record_index,
    r.source_file,
    r.position,
    r.source_format,
    r.conversation_id,
    s.status::VARCHAR AS status,
    r.parse_error,
    CASE WHEN json_valid(r.raw_text) THEN json(r.raw_text) ELSE to_json(r.raw_text) END AS raw
FROM read_parquet($raw) AS r
LEFT JOIN read_parquet($status) AS s USING (partition, record_index)
WHERE ($wanted IS NULL OR s.status::VARCHAR = $wanted)
ORDER BY r.partition, r.record_index
"""


@dataclass
class ExportResult:
    what: str
    format: str
    out: Path
    documents: int
    partitions: int


def check_request(what: str, fmt: str, status: str | None) -> None:
    """Refuse combinations that cannot mean anything, with the one that would."""
    if what not in KINDS:
        raise OperationUsageError(f"--what {what!r}: expected one of {', '.join(KINDS)}")
    if fmt not in FORMATS:
        raise OperationUsageError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt not in KIND_FORMATS[what]:
        raise OperationUsageError(
            f"--what {what} cannot be written as {fmt}: its records are not all valid "
            f"conversations; use {' or '.join(KIND_FORMATS[what])}"
        )
    only = KIND_STATUS[what]
    if status is not None and only is not None and status != only:
        raise OperationUsageError(
            f"--what {what} holds {only} conversations only; "
            f"for {status} ones use --what raw --status {status}"
        )


def export(
    lake: Lake,
    *,
    what: str,
    fmt: str,
    out: Path,
    partition: str | None = None,
    status: str | None = None,
    force: bool = False,
    on_partition: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Write the `what` documents (of `partition`, in `status`) to `out` as `fmt`.

    An existing `out` is replaced (or, for `json`, written into) only with `force`.
    `on_partition(done, total)` is told the progress, one partition at a time.
    """
    check_request(what, fmt, status)
    check_target(out, folder=fmt == "json", force=force)
    sources = _sources(lake, what, partition)
    total = len(sources)
    progress = on_partition or (lambda done, total: None)
    progress(0, total)
    try:
        if what == "raw":
            documents = _export_raw(lake, sources, fmt, out, status, force, progress)
        else:
            documents = _export_documents(sources, what, fmt, out, force, progress)
    except OSError as error:  # a full disk, a read-only folder: one line, with the path
        where = error.filename or out
        raise OperationError(f"{where}: cannot be written: {error.strerror or error}") from error
    return ExportResult(what, fmt, out, documents, total)


def _node_kind(mode: int) -> str | None:
    """What a filesystem node is, when it is not something an export may replace."""
    return next((kind for test, kind in _NODE_KINDS if test(mode)), None)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise OperationError(f"{path}: cannot be checked: {error.strerror}") from error


def check_target(out: Path, *, folder: bool, force: bool) -> None:
    """Refuse an `--out` that is not a new path or what `force` allows to replace.

    `folder`: the json format's folder, which must be new, empty, or written into with
    `force`; otherwise a file, which must be new, or a regular file and `force`.
    """
    found = _lstat(out)
    if found is None:
        return
    kind = _node_kind(found.st_mode)
    if kind is not None:
        raise OperationError(f"{out}: is {kind}, not a regular file; give another --out")
    if folder:
        if not stat.S_ISDIR(found.st_mode):
            raise OperationError(
                f"{out}: exists and is not a folder (json writes one per document)"
            )
        if not force and any(out.iterdir()):
            raise OperationError(
                f"{out}: folder is not empty; --force writes into it (replacing files of the "
                "same name)"
            )
        return
    if stat.S_ISDIR(found.st_mode):
        raise OperationError(f"{out}: is a folder; this format writes one file")
    if not force:
        raise OperationError(f"{out}: exists; --force replaces it")


@contextmanager
def _replacing(target: Path, *, force: bool) -> Iterator[tuple[Path, BinaryIO]]:
    """Write `target` atomically: a temporary file beside it, renamed onto it at the end.

    The temporary file is created with mode 0666, so the kernel applies the user's
    umask (and a folder's default ACL) as for any new file; when `target` exists, its
    permission bits (and owner, where allowed) carry over to the new file. The
    temporary name is random, never derived from the target's (that can be 255 bytes).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".enrich-export-{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield tmp, handle
            # Checked again right before the rename: the export can take minutes.
            existing = _lstat(target)
            if existing is not None:
                kind = _node_kind(existing.st_mode) or (
                    "a folder" if stat.S_ISDIR(existing.st_mode) else None
                )
                if kind is not None:
                    raise OperationError(f"{target}: is {kind}, not a regular file; not replaced")
                if not force:
                    raise OperationError(f"{target}: exists; --force replaces it")
                if (existing.st_uid, existing.st_gid) != (os.getuid(), os.getgid()):
                    with suppress(PermissionError):
                        os.fchown(handle.fileno(), existing.st_uid, existing.st_gid)
                os.fchmod(handle.fileno(), stat.S_IMODE(existing.st_mode) & 0o777)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _sources(lake: Lake, what: str, partition: str | None) -> list[tuple[str, Path]]:
    """(partition, file) of every partition holding this kind, or of `partition` alone."""
    kind = "quarantine" if what == "quarantine" else "enriched"
    if what == "raw":
        files = sorted((lake.data_dir / "lake" / "raw").glob("*.parquet"))
    else:
        files = sorted((lake.data_dir / "export" / kind).glob("*.jsonl"))
    sources = [(f.stem, f) for f in files]
    if partition is not None:
        if partition not in known_partitions(lake):
            raise OperationUsageError(f"--partition {partition!r}: no such partition")
        sources = [(p, f) for p, f in sources if p == partition]
        # A kind written with no line has no file: the partition holds none of it.
        if not sources and (what == "raw" or receipt_lines(lake, partition, kind) != 0):
            raise OperationError(f"partition {partition!r}: no {what} data for it")
    return sources


def _export_raw(
    lake: Lake,
    sources: list[tuple[str, Path]],
    fmt: str,
    out: Path,
    status: str | None,
    force: bool,
    progress: Callable[[int, int], None],
) -> int:
    con = duckdb.connect()
    documents = 0
    try:
        if fmt == "jsonl":
            with _replacing(out, force=force) as (tmp, handle):
                for done, (partition, path) in enumerate(sources, start=1):
                    part = tmp.with_name(f"{tmp.name}.{done}")
                    params = _raw_params(lake, partition, path, status)
                    con.execute(
                        f"COPY ({_RAW_SELECT}) TO $out (FORMAT json)", {**params, "out": str(part)}
                    )
                    documents += _append(handle, part)
                    progress(done, len(sources))
            return documents
        out.mkdir(parents=True, exist_ok=True)
        names: set[str] = set()
        for done, (partition, path) in enumerate(sources, start=1):
            cursor = con.execute(_RAW_SELECT, _raw_params(lake, partition, path, status))
            columns = [d[0] for d in cursor.description]
            while rows := cursor.fetchmany(FETCH_ROWS):
                for row in rows:
                    record = dict(zip(columns, row, strict=True))
                    record["raw"] = orjson.loads(record["raw"])
                    stem = record["conversation_id"] or f"{partition}-{record['record_index']}"
                    _write_json(out, _unique(stem, partition, names), record, force)
                    documents += 1
            progress(done, len(sources))
        return documents
    finally:
        con.close()


def _raw_params(lake: Lake, partition: str, path: Path, status: str | None) -> dict[str, Any]:
    status_path = lake.layer_path("status", partition)
    if not status_path.exists():
        raise OperationError(f"partition {partition!r} has raw rows but no status file")
    return {"raw": str(path), "status": str(status_path), "wanted": status}


def _append(handle: BinaryIO, part: Path) -> int:
    """Append one partition's JSON lines to the output; returns how many lines."""
    try:
        data = part.read_bytes()
    finally:
        part.unlink(missing_ok=True)
    handle.write(data)
    return data.count(b"\n")


def _export_documents(
    sources: list[tuple[str, Path]],
    what: str,
    fmt: str,
    out: Path,
    force: bool,
    progress: Callable[[int, int], None],
) -> int:
    convert = _converter(what, fmt)
    documents = 0
    if fmt == "json":
        out.mkdir(parents=True, exist_ok=True)
        names: set[str] = set()
        for done, (partition, path) in enumerate(sources, start=1):
            for number, line in enumerate(_lines(path), start=1):
                document = orjson.loads(line)
                stem = document.get("conversation_id") or f"{partition}-{number}"
                _write_json(out, _unique(stem, partition, names), convert(document), force)
                documents += 1
            progress(done, len(sources))
        return documents
    with _replacing(out, force=force) as (_, handle):
        for done, (_, path) in enumerate(sources, start=1):
            for line in _lines(path):
                if convert is _as_is:
                    handle.write(line + b"\n")  # the contract's bytes, unchanged
                else:
                    handle.write(orjson.dumps(convert(orjson.loads(line))) + b"\n")
                documents += 1
            progress(done, len(sources))
    return documents


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def _as_is(document: dict[str, Any]) -> dict[str, Any]:
    return document


def _openai(document: dict[str, Any]) -> dict[str, Any]:
    messages = document["messages"]
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}


def _sharegpt(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "conversations": [
            {"from": SHAREGPT_ROLES.get(m["role"], m["role"]), "value": m["content"]}
            for m in document["messages"]
        ]
    }


def _converter(what: str, fmt: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    if fmt == "sharegpt":
        return _sharegpt
    if fmt == "openai" or what == "training":
        return _openai
    return _as_is


def file_stem(text: str) -> str:
    """A file name (without extension) for an id or partition key, whatever it holds.

    A plain name (letters, digits, `_.-`, not starting with a dot, at most 100
    characters: every UUID) is kept as it is. Anything else (a path, markup,
    control characters, 300 characters) becomes its plain characters, cut to 40,
    and 16 hex digits of its sha256, so two different ids never share a name.
    """
    if _PLAIN_NAME.fullmatch(text):
        return text
    prefix = _UNSAFE.sub("_", text)[:_PREFIX_CHARS].strip("_")
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{prefix}-{digest}" if prefix else digest


def _unique(stem: str, partition: str, taken: set[str]) -> str:
    """A file name for this document; a duplicated id is told apart by its partition."""
    name = file_stem(stem)
    if name in taken:
        name = f"{name}.{file_stem(partition)}"
    base, n = name, 2
    while name in taken:
        name, n = f"{base}.{n}", n + 1
    taken.add(name)
    return name


def _write_json(folder: Path, name: str, document: dict[str, Any], force: bool) -> None:
    with _replacing(folder / f"{name}.json", force=force) as (_, handle):
        handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
