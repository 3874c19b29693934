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
Every file is written atomically.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import orjson

from enrichment_assets.lake import Lake, atomic_path
from enrichment_assets.operations import OperationError, OperationUsageError

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
    on_partition: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Write the `what` documents (of `partition`, in `status`) to `out` as `fmt`.

    `on_partition(done, total)` is told the progress, one partition at a time.
    """
    check_request(what, fmt, status)
    if fmt == "json":
        if out.exists() and not out.is_dir():
            raise OperationError(
                f"{out}: exists and is not a folder (json writes one per document)"
            )
    elif out.is_dir():
        raise OperationError(f"{out}: is a folder; --format {fmt} writes one file")
    sources = _sources(lake, what, partition)
    total = len(sources)
    progress = on_partition or (lambda done, total: None)
    progress(0, total)
    if what == "raw":
        documents = _export_raw(lake, sources, fmt, out, status, progress)
    else:
        documents = _export_documents(sources, what, fmt, out, progress)
    return ExportResult(what, fmt, out, documents, total)


def _sources(lake: Lake, what: str, partition: str | None) -> list[tuple[str, Path]]:
    """(partition, file) of every partition holding this kind, or of `partition` alone."""
    if what == "raw":
        files = sorted((lake.data_dir / "lake" / "raw").glob("*.parquet"))
    else:
        kind = "quarantine" if what == "quarantine" else "enriched"
        files = sorted((lake.data_dir / "export" / kind).glob("*.jsonl"))
    sources = [(f.stem, f) for f in files]
    if partition is not None:
        sources = [(p, f) for p, f in sources if p == partition]
        if not sources:
            raise OperationError(f"unknown partition {partition!r}: no {what} data for it")
    return sources


def _export_raw(
    lake: Lake,
    sources: list[tuple[str, Path]],
    fmt: str,
    out: Path,
    status: str | None,
    progress: Callable[[int, int], None],
) -> int:
    con = duckdb.connect()
    documents = 0
    try:
        if fmt == "jsonl":
            with atomic_path(out) as tmp, tmp.open("wb") as handle:
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
                    _write_json(out, _unique(stem, partition, names), record)
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
                _write_json(out, _unique(stem, partition, names), convert(document))
                documents += 1
            progress(done, len(sources))
        return documents
    with atomic_path(out) as tmp, tmp.open("wb") as handle:
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


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _unique(stem: str, partition: str, taken: set[str]) -> str:
    """A file name for this document; a duplicated id is told apart by its partition."""
    name = _UNSAFE.sub("_", stem).strip("._") or "document"
    if name in taken:
        name = f"{name}.{partition}"
    base, n = name, 2
    while name in taken:
        name, n = f"{base}.{n}", n + 1
    taken.add(name)
    return name


def _write_json(folder: Path, name: str, document: dict[str, Any]) -> None:
    with atomic_path(folder / f"{name}.json") as tmp:
        tmp.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
