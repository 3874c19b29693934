"""The per-partition export files of the contract, written durably, one identity each.

`export/enriched/<partition>.jsonl`, `export/training/<partition>.jsonl` and
`export/quarantine/<partition>.jsonl` are written by DuckDB (`sql/export_*.sql`) into a
hidden temporary file beside the target, flushed to disk, renamed, and the folder
flushed: after `write_exports` returns, the lines survive a crash or a power cut. Only
then may a conversation be called `completed`. A kind with no line has no file (none is
written, an earlier one is removed); its receipt says 0 lines.

The enriched and training files hold only the current version of each conversation
(`identity.py`): records that a newer version replaced are left out. When a partition's
versions replace records another partition already exported, `retire_superseded` marks
them `superseded` and rewrites that partition's files without them.

Each write leaves a receipt, `lake/exports/<partition>.json`: the lines and bytes of each
file. `verify_exports` compares receipts, files and statuses, so that no report says all
is well while a completed conversation has no export line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pyarrow as pa

from enrichment_assets.faults import fault_point
from enrichment_assets.identity import identity_index
from enrichment_assets.lake import Lake, hidden_temp, write_bytes_atomic
from enrichment_assets.locks import partition_lock
from enrichment_assets.sql_files import load_sql
from enrichment_assets.status import apply_changes, read_status

# kind -> (layer it is written from, SQL statement)
EXPORTS = {
    "enriched": ("normalized", "export_enriched"),
    "training": ("normalized", "export_training"),
    "quarantine": ("quarantine", "export_quarantine"),
}
# The kinds that hold completed conversations, one line each.
CONVERSATION_KINDS = ("enriched", "training")


@dataclass(frozen=True)
class ExportFile:
    kind: str
    path: Path
    lines: int
    bytes: int


def receipt_path(lake: Lake, partition: str) -> Path:
    return lake.data_dir / "lake" / "exports" / f"{partition}.json"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staged_export(target: Path) -> Iterator[Path]:
    """A hidden temporary path beside `target`, removed at exit (the caller renames it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = hidden_temp(target)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _write_one(lake: Lake, partition: str, kind: str, excluded: pa.Table) -> ExportFile:
    layer, statement = EXPORTS[kind]
    target = lake.export_path(kind, partition)
    # One thread: a file in record order is written by one thread anyway, and more threads
    # only read ahead of it, buffering rows (1.5 GB at 300,000 conversations against 230 MB).
    with duckdb.connect(config={"threads": 1}) as con, staged_export(target) as tmp:
        con.execute(load_sql("macros"))
        con.register("excluded_records", excluded)
        (lines,) = con.execute(
            load_sql(statement), [str(lake.layer_path(layer, partition)), str(tmp)]
        ).fetchone()
        if lines:
            _fsync(tmp)
            size = tmp.stat().st_size
            os.replace(tmp, target)
        else:
            # No line, no file (a batch with nothing rejected has no quarantine export);
            # the receipt says 0 lines, and a file an earlier run wrote goes.
            size = 0
            target.unlink(missing_ok=True)
    _fsync(target.parent)
    if kind == "enriched":
        fault_point("exports")
    return ExportFile(kind, target, int(lines), size)


def write_exports(
    lake: Lake,
    partition: str,
    excluded: Iterable[int] = (),
    kinds: Iterable[str] = tuple(EXPORTS),
) -> dict[str, ExportFile]:
    """Write the partition's export files, each durably, without the `excluded` records;
    then its receipt. The kinds are written side by side, each by its own connection."""
    excluded_table = pa.table({"record_index": pa.array(sorted(set(excluded)), pa.int64())})
    kinds = list(kinds)
    with ThreadPoolExecutor(len(kinds), thread_name_prefix="export") as pool:
        written = dict(
            zip(
                kinds,
                pool.map(lambda kind: _write_one(lake, partition, kind, excluded_table), kinds),
                strict=True,
            )
        )
    receipt = _read_receipt(lake, partition)
    receipt.update({kind: {"lines": f.lines, "bytes": f.bytes} for kind, f in written.items()})
    write_bytes_atomic(
        receipt_path(lake, partition), orjson.dumps(receipt, option=orjson.OPT_INDENT_2)
    )
    _fsync(receipt_path(lake, partition).parent)
    return written


def receipt_lines(lake: Lake, partition: str, kind: str) -> int | None:
    """The lines the partition's last write of this kind held (0: no file, by design);
    None when its receipt does not know the kind."""
    entry = _read_receipt(lake, partition).get(kind)
    return entry.get("lines") if isinstance(entry, dict) else None


def _read_receipt(lake: Lake, partition: str) -> dict:
    path = receipt_path(lake, partition)
    if not path.exists():
        return {}
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def retire_superseded(
    lake: Lake,
    replaced: dict[str, list[int]],
    by_partition: str,
    *,
    owner: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Take records that a newer version replaced out of their partitions' exports.

    For each partition in `replaced` ({partition: record indexes}) whose status still says
    `completed` for some of those records: under that partition's lock, their status becomes
    `superseded` first, then its enriched and training files are rewritten without every
    record that is no longer current. A crash in between leaves a record in at most one
    export (the new version is written after this returns). Returns {partition: retired}.
    """
    url = lake.app_db_url
    index = identity_index(lake, url)
    retired: dict[str, int] = {}
    for partition in sorted(replaced):
        with partition_lock(lake.data_dir, partition, app_db_url=url, owner=owner, on_wait=log):
            status = read_status(lake, partition)
            exported = status.filter(
                pl.col("record_index").is_in(replaced[partition])
                & (pl.col("status") == "completed")
            )
            if exported.height == 0:
                continue
            now = datetime.now(UTC)
            apply_changes(
                lake,
                partition,
                exported.select(
                    "record_index",
                    pl.lit("superseded").alias("status"),
                    pl.lit(f"superseded: a newer version landed in partition {by_partition}").alias(
                        "last_error"
                    ),
                ),
                now,
            )
            write_exports(lake, partition, index.stale_rows(partition).own, CONVERSATION_KINDS)
            retired[partition] = exported.height
            if log is not None:
                log(
                    f"partition {partition}: {exported.height} conversation(s) superseded by "
                    f"newer versions in {by_partition}; its exports rewritten without them"
                )
    return retired


@dataclass(frozen=True)
class ExportMismatch:
    """A partition whose exports do not hold exactly its completed conversations."""

    partition: str
    detail: str


def verify_exports(lake: Lake, completed: dict[str, int]) -> list[ExportMismatch]:
    """Partitions whose export files disagree with their completed count ({partition: n}).

    Cheap enough for every report: a receipt read and a `stat` per file, no line counted.
    """
    problems = []
    for partition, count in sorted(completed.items()):
        receipt = _read_receipt(lake, partition)
        for kind in CONVERSATION_KINDS:
            entry = receipt.get(kind)
            path = lake.export_path(kind, partition)
            if entry is None or not path.exists():
                if count:
                    problems.append(
                        ExportMismatch(partition, f"{count} completed, no {kind} export file")
                    )
                continue
            size = path.stat().st_size
            if size != entry.get("bytes"):
                problems.append(
                    ExportMismatch(
                        partition,
                        f"{kind} export is {size} bytes, {entry.get('bytes')} were written",
                    )
                )
            elif entry.get("lines") != count:
                problems.append(
                    ExportMismatch(
                        partition,
                        f"{count} completed, {entry.get('lines')} line(s) in the {kind} export",
                    )
                )
    return problems
