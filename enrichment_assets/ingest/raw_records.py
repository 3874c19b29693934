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

Every record becomes a row. A record that does not parse, is not an object, or
breaks one of the `RecordLimits`, is a row with `parse_error` (one line) and
`parse_rule` (its machine rule) set and no `record_json`. Undecodable bytes are
repaired and flagged in `parse_error` too (`encoding_repaired`: the record is still
mapped and goes on). A file that cannot be read at all is one row too
(`file_problem_table`). Memory is bounded by the chunk size and the record size
limit, whatever the file holds: a line over the limit is hashed as it streams by.

UTF-8 JSON Lines, the layout of big files, can also be read in byte ranges of whole
lines (`json_lines_ranges`, `read_line_range`), one worker process each; the rows
are exactly those `read_raw_records` gives.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow as pa

from enrichment_assets.ingest.encodings import (
    ENCODING_REPAIRED,
    DecodedText,
    OversizedLine,
    TextEncoding,
    detect_encoding,
    iter_lines,
    iter_utf8_lines,
    read_document,
    read_oversized,
    repair_utf8,
)
from enrichment_assets.ingest.files import FileProblem
from enrichment_assets.ingest.formats import (
    MappedRecord,
    derive_conversation_id,
    map_record,
    uuid5_from_digest,
)
from enrichment_assets.ingest.limits import NESTING_TOO_DEEP, RECORD_TOO_LARGE, RecordLimits
from enrichment_assets.workers import gc_paused

# The contract of the raw layer. The two payload columns are large_string: a chunk
# of long conversations can pass the 2 GiB offset limit of `string`, and Polars
# uses large strings anyway (zero-copy).
RAW_RECORD_SCHEMA = pa.schema(
    [
        # The input file's path as given, escaped (`files.escape_name`: lossless, inert).
        pa.field("source_file", pa.string(), nullable=False),
        # 1-based: line number (JSON Lines), element number (array), 1 (one object);
        # 0 for the row of a file that could not be read at all.
        pa.field("position", pa.int64(), nullable=False),
        # The record's text; only its first KiB for a record over the size limit.
        pa.field("raw_text", pa.large_string(), nullable=False),
        # sha256 hex of the record's text (of all of it, also when raw_text is cut).
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("source_format", pa.string(), nullable=False),
        pa.field("record_json", pa.large_string(), nullable=True),
        pa.field("conversation_id", pa.string(), nullable=False),
        pa.field("parse_error", pa.string(), nullable=True),
        # The machine rule of parse_error: invalid_json, not_an_object, forbidden_bytes,
        # encoding_repaired (the record goes on), a limit's rule, or a file's rule.
        pa.field("parse_rule", pa.string(), nullable=True),
    ]
)

# Rules of raw rows that are not records at all (their line or file is the problem).
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
FORBIDDEN_BYTES = "forbidden_bytes"

# (position, raw_text, content_hash, source_format, record_json, conversation_id,
# parse_error, parse_rule); the text columns as UTF-8 bytes, so that no record is
# decoded into a Python str only to be encoded again by Arrow.
_Row = tuple[int, bytes, str, str, bytes | None, str, str | None, str | None]

_REPLACEMENT = "\ufffd".encode()  # U+FFFD as UTF-8: a byte replaced while decoding
# Bytes JSON text never holds raw (RFC 8259: control characters must be escaped).
_FORBIDDEN_BYTE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
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


def file_problem_table(source_file: str, problem: FileProblem, sha256: str | None) -> pa.Table:
    """The one raw row of a file that could not be read at all: position 0, no text.

    Its id is derived from the file's name and content hash (or its problem, when it
    has no content), so that two such files never share an id.
    """
    identity = f"file\0{source_file}\0{sha256 or problem.rule}".encode()
    row: _Row = (
        0,
        b"",
        _EMPTY_SHA256,
        "unknown",
        None,
        derive_conversation_id(identity),
        problem.reason,
        problem.rule,
    )
    return _to_table(source_file, [row])


def _read_chunks(
    path: Path, source_file: str, chunk_size: int, limits: RecordLimits
) -> Iterator[pa.Table]:
    try:
        with path.open("rb") as stream:
            encoding = detect_encoding(stream.read(4))
            stream.seek(encoding.bom_length)
            rows = _rows(stream, encoding, limits)
            while batch := list(islice(rows, chunk_size)):
                yield _to_table(source_file, batch)
    except OSError as error:
        raise UnreadableInput(f"cannot read {path}: {os_error_reason(error)}") from error


def _to_table(source_file: str, batch: list[_Row]) -> pa.Table:
    positions, raw_texts, hashes, formats, records, ids, errors, rules = zip(*batch, strict=True)
    columns = {
        "source_file": pa.array([source_file] * len(batch), pa.string()),
        "position": pa.array(positions, pa.int64()),
        "raw_text": _utf8_array(raw_texts),
        "content_hash": pa.array(hashes, pa.string()),
        "source_format": pa.array(formats, pa.string()),
        "record_json": _utf8_array(records),
        "conversation_id": pa.array(ids, pa.string()),
        "parse_error": pa.array(errors, pa.string()),
        "parse_rule": pa.array(rules, pa.string()),
    }
    return pa.Table.from_arrays(
        [columns[name] for name in RAW_RECORD_SCHEMA.names], schema=RAW_RECORD_SCHEMA
    )


def _utf8_array(values: tuple[bytes | None, ...]) -> pa.Array:
    # From bytes, never through Python strs; the cast validates UTF-8, in C.
    return pa.array(values, pa.large_binary()).cast(pa.large_string())


def _sniff(
    stream: BinaryIO, encoding: TextEncoding, limits: RecordLimits
) -> tuple[str, DecodedText | None, Any]:
    """(layout, first line, its value) from the first two non-blank lines (module docstring).

    Layouts: "empty", "one_line" (one JSON value on one line), "document" (a value
    spread over many lines) and "lines" (JSON Lines). Reads from the current position.
    """
    lines = iter_lines(stream, encoding, limits.max_record_bytes)
    first = next(lines, None)
    if first is None:
        return "empty", None, None
    if isinstance(first, OversizedLine):
        return "lines", None, None
    second = next(lines, None)
    first, value, error = _parse(first)
    if error is None and second is None:
        return "one_line", first, value
    if (
        error is not None
        and _ran_out_of_data(first.data, error)
        and not _is_truncated_first_line(first, second)
    ):
        return "document", None, None
    return "lines", None, None


def _rows(stream: BinaryIO, encoding: TextEncoding, limits: RecordLimits) -> Iterator[_Row]:
    layout, first, value = _sniff(stream, encoding, limits)
    stream.seek(encoding.bom_length)
    if layout == "one_line" and first is not None:
        yield from _document_rows(first, value, limits)
    elif layout == "document":
        yield from _pretty_document_rows(stream, encoding, limits)
    elif layout == "lines":
        for line in iter_lines(stream, encoding, limits.max_record_bytes):
            yield _line_row(line, limits)


def _pretty_document_rows(
    stream: BinaryIO, encoding: TextEncoding, limits: RecordLimits
) -> Iterator[_Row]:
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
        yield _oversized_row(read_oversized(stream, 1, start, to_end=True), limits)
        return
    stream.seek(start)
    document, value, error = _parse(read_document(stream, encoding), where="file")
    if error is not None:
        yield _broken_row(1, document, *_describe(document, error, document=True))
    else:
        yield from _document_rows(document, value, limits)


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
                _line_row(line, limits)
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
    return _to_table(source_file, rows) if rows else RAW_RECORD_SCHEMA.empty_table()


def _is_truncated_first_line(
    first: DecodedText, second: DecodedText | OversizedLine | None
) -> bool:
    """True for JSON Lines whose first record is cut short (a crashed writer)."""
    if second is None or not first.data.lstrip().startswith(b"{"):
        return False
    if isinstance(second, OversizedLine):
        return True
    _, value, error = _parse(second)
    return error is None and isinstance(value, dict)


def _parse(
    text: DecodedText, where: str = "line"
) -> tuple[DecodedText, Any, orjson.JSONDecodeError | None]:
    """(text, value, error); `text` repaired when it had undecodable bytes."""
    try:
        return text, orjson.loads(text.data), None
    except orjson.JSONDecodeError as error:
        # orjson rejects invalid UTF-8 anywhere in its input: only now is it worth
        # checking the encoding, and parsing again what is left after repair.
        repaired = repair_utf8(text)
        if repaired is text:
            return text, None, error
    try:
        return repaired, orjson.loads(repaired.data), None
    except orjson.JSONDecodeError as error:
        return repaired, None, error


def _ran_out_of_data(payload: bytes, error: orjson.JSONDecodeError) -> bool:
    """True when `payload` is the valid start of a longer JSON value."""
    return "end of data" in error.msg or error.pos >= len(payload.rstrip())


def _describe(
    text: DecodedText, error: orjson.JSONDecodeError, document: bool = False
) -> tuple[str, str]:
    """(rule, reason) of a line (or, with `document`, a whole file) that does not parse."""
    if "depth limit" in error.msg:
        return NESTING_TOO_DEEP, f"nested too deep to parse ({error.msg})"
    forbidden = _FORBIDDEN_BYTE.search(text.data)
    if forbidden is not None:
        return FORBIDDEN_BYTES, (
            f"raw control byte 0x{forbidden.group()[0]:02x} at {text.where(forbidden.start())}: "
            "not allowed in JSON text"
        )
    # The parser of one JSON Lines line counts from 1: report the file's line number.
    line = error.lineno if document else text.number
    return INVALID_JSON, f"invalid JSON at line {line} column {error.colno}: {error.msg}"


def _line_row(line: DecodedText | OversizedLine, limits: RecordLimits) -> _Row:
    if isinstance(line, OversizedLine):
        return _oversized_row(line, limits)
    text, value, error = _parse(line)
    if error is not None:
        return _broken_row(text.number, text, *_describe(text, error))
    return _record_row(text.number, text.data, value, text.decode_error, limits)


def _document_rows(document: DecodedText, value: Any, limits: RecordLimits) -> Iterator[_Row]:
    if not isinstance(value, list):
        yield _record_row(1, document.data, value, document.decode_error, limits)
        return
    for position, element in enumerate(value, start=1):
        raw_text = _serialize(element)
        # Flag only the elements that hold a repaired byte, not the whole array.
        decode_error = document.decode_error if _REPLACEMENT in raw_text else None
        yield _record_row(position, raw_text, element, decode_error, limits)


def _record_row(
    position: int, raw_text: bytes, value: Any, decode_error: str | None, limits: RecordLimits
) -> _Row:
    content_hash = hashlib.sha256(raw_text).hexdigest()
    violation = limits.violation(raw_text, value)
    if violation is not None:
        rule, reason = violation
        given = value.get("conversation_id") if isinstance(value, dict) else None
        return (
            position,
            raw_text,
            content_hash,
            "unknown",
            None,
            given if isinstance(given, str) else derive_conversation_id(raw_text),
            "; ".join(e for e in (decode_error, reason) if e),
            rule,
        )
    try:
        mapped = map_record(value)
    except orjson.JSONEncodeError as error:
        # orjson parses deeper nesting than it serializes: keep the row, unmapped.
        mapped = MappedRecord(
            "unknown", None, derive_conversation_id(raw_text), f"cannot map record: {error}"
        )
    parse_error = "; ".join(e for e in (decode_error, mapped.error) if e) or None
    if mapped.error is not None:
        rule = NOT_AN_OBJECT if not isinstance(value, dict) else NESTING_TOO_DEEP
    else:
        rule = ENCODING_REPAIRED if decode_error else None
    return (
        position,
        raw_text,
        content_hash,
        mapped.source_format,
        mapped.record_json,
        mapped.conversation_id,
        parse_error,
        rule,
    )


def _broken_row(position: int, text: DecodedText, rule: str, reason: str) -> _Row:
    parse_error = f"{text.decode_error}; {reason}" if text.decode_error else reason
    return (
        position,
        text.data,
        hashlib.sha256(text.data).hexdigest(),
        "unknown",
        None,
        derive_conversation_id(text.data),
        parse_error,
        rule,
    )


def _oversized_row(line: OversizedLine, limits: RecordLimits) -> _Row:
    return (
        line.number,
        line.head,
        line.sha256,
        "unknown",
        None,
        uuid5_from_digest(line.uuid5_digest),
        f"{limits.too_large(line.size)}: not read (line {line.number}, "
        f"byte {line.offset + 1} of the file)",
        RECORD_TOO_LARGE,
    )


def _serialize(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # Nesting deeper than orjson serializes: the stdlib has no such limit.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
