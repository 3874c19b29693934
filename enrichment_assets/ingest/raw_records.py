"""One landed file -> raw rows (RAW_RECORD_SCHEMA), in bounded chunks, nothing dropped.

The layout of a file is sniffed from its first two non-blank lines, never from
its name:
- the first line parses alone and is the only line: one JSON value on one line
  (an object, or an array whose elements are the records);
- the first line parses alone and more lines follow: JSON Lines, streamed;
- the first line is the start of a longer value (the parser ran out of data): a
  pretty-printed object or array, parsed as one document; unless the first line
  starts with `{` and the second line is an object on its own, which is JSON Lines
  whose first record is truncated;
- otherwise (garbage on the first line): JSON Lines, the first line a broken row.

Every record becomes a row (`raw_rows`: the same rules in every reader). A record
that does not parse, is not an object, or breaks one of the `RecordLimits`, is a row
with `parse_error` (one line) and `parse_rule` (its machine rule) set and no
`record_json`. Undecodable bytes are repaired and flagged in `parse_error` too
(`encoding_repaired`: the record is still mapped and goes on). Memory is bounded by
the chunk size and the record size limit, whatever the file holds: a line over the
limit is hashed as it streams by.

UTF-8 JSON Lines, the layout of big files, can also be read in byte ranges of whole
lines (`json_lines_ranges`, `read_line_range`), one worker process each; the rows
are exactly those `read_raw_records` gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from enrichment_assets.ingest.encodings import (
    DecodedText,
    OversizedLine,
    TextEncoding,
    detect_encoding,
    iter_lines,
    iter_utf8_lines,
    read_document,
    read_oversized,
)
from enrichment_assets.ingest.limits import RecordLimits
from enrichment_assets.ingest.raw_rows import (
    RAW_RECORD_SCHEMA,
    Row,
    broken_row,
    describe_error,
    document_rows,
    line_row,
    oversized_row,
    parse_text,
    ran_out_of_data,
    to_table,
)
from enrichment_assets.workers import gc_paused

DEFAULT_LIMITS = RecordLimits()


class UnreadableInput(Exception):
    """The file cannot be opened or read at all (missing, permission, a directory)."""


def os_error_reason(error: OSError) -> str:
    """A one-line reason, for people, why a path cannot be read."""
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, IsADirectoryError):
        return "is a directory"
    return (error.strerror or str(error)).splitlines()[0].lower()


def read_raw_records(
    path: Path,
    source_file: str,
    chunk_size: int = 10_000,
    limits: RecordLimits = DEFAULT_LIMITS,
) -> Iterator[pa.Table]:
    """Raw rows of one landed file, as tables of at most `chunk_size` rows.

    Raises UnreadableInput at once when the file cannot be opened (and later if a
    read fails). An empty or blank file yields no table.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    path = Path(path)
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise UnreadableInput(f"cannot read {path}: {os_error_reason(error)}") from error
    return _read_chunks(path, source_file, chunk_size, limits)


def _read_chunks(
    path: Path, source_file: str, chunk_size: int, limits: RecordLimits
) -> Iterator[pa.Table]:
    try:
        with path.open("rb") as stream:
            encoding = detect_encoding(stream.read(4))
            stream.seek(encoding.bom_length)
            rows = _rows(stream, encoding, limits)
            while batch := list(islice(rows, chunk_size)):
                yield to_table(source_file, batch)
    except OSError as error:
        raise UnreadableInput(f"cannot read {path}: {os_error_reason(error)}") from error


def _sniff(
    stream: BinaryIO, encoding: TextEncoding, limits: RecordLimits
) -> tuple[str, DecodedText | None, Any]:
    """(layout, first line, its value) from the first two non-blank lines (module docstring).

    Layouts: "empty", "one_line" (one JSON value on one line), "document" (a value
    spread over many lines) and "lines" (JSON Lines). Reads from the current position.
    """
    start = stream.tell()
    lines = iter_lines(stream, encoding, limits.max_record_bytes)
    first = next(lines, None)
    if first is None:
        return "empty", None, None
    if isinstance(first, OversizedLine):
        # A JSON array written on one line (a compact export) is a document of records,
        # each held to the limits; only a single over-long record is one record too large.
        stream.seek(start)
        starts_array = encoding.is_utf8 and stream.read(4096).lstrip().startswith(b"[")
        return ("document" if starts_array else "lines"), None, None
    second = next(lines, None)
    first, value, error = parse_text(first)
    if error is None and second is None:
        return "one_line", first, value
    if (
        error is not None
        and ran_out_of_data(first.data, error)
        and not _is_truncated_first_line(first, second)
    ):
        return "document", None, None
    return "lines", None, None


def _rows(stream: BinaryIO, encoding: TextEncoding, limits: RecordLimits) -> Iterator[Row]:
    layout, first, value = _sniff(stream, encoding, limits)
    stream.seek(encoding.bom_length)
    if layout == "one_line" and first is not None:
        yield from document_rows(first, value, limits)
    elif layout == "document":
        yield from _prettydocument_rows(stream, encoding, limits)
    elif layout == "lines":
        for line in iter_lines(stream, encoding, limits.max_record_bytes):
            yield line_row(line, limits)


def _prettydocument_rows(
    stream: BinaryIO, encoding: TextEncoding, limits: RecordLimits
) -> Iterator[Row]:
    """Rows of a value spread over many lines: parsed whole (its elements are the records).

    A single object over the size limit is one record too large: it is hashed as it
    streams by, never loaded. An array is loaded whole (JSON Lines is the format for
    big files) and each element is held to the limits.
    """
    start = stream.tell()
    size = stream.seek(0, 2) - start
    stream.seek(start)
    if encoding.is_utf8 and size > limits.max_record_bytes and _starts_with_object(stream):
        stream.seek(start)
        yield oversized_row(read_oversized(stream, 1, start, to_end=True), limits)
        return
    stream.seek(start)
    document, value, error = parse_text(read_document(stream, encoding), where="file")
    if error is not None:
        yield broken_row(1, document, *describe_error(document, error, document=True))
    else:
        yield from document_rows(document, value, limits)


def _starts_with_object(stream: BinaryIO) -> bool:
    head = stream.read(4096).lstrip()
    return head.startswith(b"{")


# --- UTF-8 JSON Lines in byte ranges, one task each (see `workers`) ----------------------------

# About this many bytes of input per range, and at most this many lines: the tables of
# one range stay this order of size whatever the length of its lines.
RANGE_BYTES = 16 << 20
RANGE_ROWS = 10_000
# Bytes read per step while cutting a file into ranges.
_SCAN_BYTES = 1 << 20


@dataclass(frozen=True)
class LineRange:
    """Whole lines of a file: bytes [start, end), the first of them line `first_line`."""

    start: int
    end: int
    first_line: int


def json_lines_ranges(
    path: Path,
    range_bytes: int | None = None,
    max_rows: int = RANGE_ROWS,
    limits: RecordLimits = DEFAULT_LIMITS,
) -> list[LineRange] | None:
    """The file cut into ranges of whole lines, when it is UTF-8 JSON Lines; else None.

    A range holds about `range_bytes` (default RANGE_BYTES) bytes and at most
    `max_rows` lines, whole lines. The file is scanned in bounded reads.

    Each range is read on its own by `read_line_range`, and together they give exactly
    the rows of `read_raw_records`. Raises UnreadableInput when the file cannot be read.
    """
    try:
        with path.open("rb") as stream:
            encoding = detect_encoding(stream.read(4))
            if not encoding.is_utf8:
                return None
            stream.seek(encoding.bom_length)
            if _sniff(stream, encoding, limits)[0] != "lines":
                return None
            stream.seek(encoding.bom_length)
            return _line_ranges(stream, encoding.bom_length, range_bytes or RANGE_BYTES, max_rows)
    except OSError as error:
        raise UnreadableInput(f"cannot read {path}: {os_error_reason(error)}") from error


def _line_ranges(stream: BinaryIO, start: int, range_bytes: int, max_rows: int) -> list[LineRange]:
    """Cut at the first line end past `range_bytes`, or at the `max_rows`-th line end."""
    ranges = []
    range_start, first_line, lines_in_range = start, 1, 0
    position = start  # file offset of block[0]
    while block := stream.read(_SCAN_BYTES):
        i = 0
        while i < len(block):
            last_in_budget = range_start + range_bytes - 1 - position
            byte_cut = (
                block.find(b"\n", max(i, last_in_budget)) if last_in_budget < len(block) else -1
            )
            scan_end = byte_cut + 1 if byte_cut >= 0 else len(block)
            row_cut = _nth_line_end(block, i, scan_end, max_rows - lines_in_range)
            cut = row_cut if row_cut >= 0 else byte_cut
            if cut < 0:
                lines_in_range += block.count(b"\n", i)
                break
            lines_in_range += block.count(b"\n", i, cut + 1)
            end = position + cut + 1
            ranges.append(LineRange(range_start, end, first_line))
            range_start, first_line, lines_in_range = end, first_line + lines_in_range, 0
            i = cut + 1
        position += len(block)
    if position > range_start:
        ranges.append(LineRange(range_start, position, first_line))
    return ranges


def _nth_line_end(block: bytes, start: int, end: int, n: int) -> int:
    """Index of the `n`-th b"\\n" in block[start:end], or -1 when it has fewer."""
    if block.count(b"\n", start, end) < n:
        return -1
    index = start - 1
    for _ in range(n):
        index = block.find(b"\n", index + 1, end)
    return index


def read_line_range(
    path: str, source_file: str, lines: LineRange, limits: RecordLimits = DEFAULT_LIMITS
) -> pa.Table:
    """Raw rows (RAW_RECORD_SCHEMA) of one range of a UTF-8 JSON Lines file."""
    try:
        with open(path, "rb") as stream, gc_paused():
            stream.seek(lines.start)
            rows = [
                line_row(line, limits)
                for line in iter_utf8_lines(
                    stream,
                    limits.max_record_bytes,
                    offset=lines.start,
                    first_line=lines.first_line,
                    end=lines.end,
                )
            ]
    except OSError as error:
        raise UnreadableInput(f"cannot read {path}: {os_error_reason(error)}") from error
    return to_table(source_file, rows) if rows else RAW_RECORD_SCHEMA.empty_table()


def _is_truncated_first_line(
    first: DecodedText, second: DecodedText | OversizedLine | None
) -> bool:
    """True for JSON Lines whose first record is cut short (a crashed writer)."""
    if second is None or not first.data.lstrip().startswith(b"{"):
        return False
    if isinstance(second, OversizedLine):
        return True
    _, value, error = parse_text(second)
    return error is None and isinstance(value, dict)
