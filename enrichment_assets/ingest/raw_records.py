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

Every record becomes a row. A record that does not parse, or is not an object,
is a row with `parse_error` set; undecodable bytes are replaced with U+FFFD and
flagged in `parse_error` too (the record is still mapped, so that quarantine
shows its shape and id).

UTF-8 JSON Lines, the layout of big files, can also be read in byte ranges of whole
lines (`json_lines_ranges`, `read_line_range`), one worker process each; the rows
are exactly those `read_raw_records` gives.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow as pa

from enrichment_assets.ingest.encodings import (
    DecodedText,
    TextEncoding,
    detect_encoding,
    iter_lines,
    read_document,
    repair_utf8,
)
from enrichment_assets.ingest.formats import MappedRecord, derive_conversation_id, map_record
from enrichment_assets.workers import gc_paused

# The contract of the raw layer. The two payload columns are large_string: a chunk
# of long conversations can pass the 2 GiB offset limit of `string`, and Polars
# uses large strings anyway (zero-copy).
RAW_RECORD_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.string(), nullable=False),
        # 1-based: line number (JSON Lines), element number (array), 1 (one object).
        pa.field("position", pa.int64(), nullable=False),
        pa.field("raw_text", pa.large_string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),  # sha256 hex of raw_text
        pa.field("source_format", pa.string(), nullable=False),
        pa.field("record_json", pa.large_string(), nullable=True),
        pa.field("conversation_id", pa.string(), nullable=False),
        pa.field("parse_error", pa.string(), nullable=True),
    ]
)

# (position, raw_text, content_hash, source_format, record_json, conversation_id,
# parse_error); the text columns as UTF-8 bytes, so that no record is decoded into a
# Python str only to be encoded again by Arrow.
_Row = tuple[int, bytes, str, str, bytes | None, str, str | None]

_REPLACEMENT = "\ufffd".encode()  # U+FFFD as UTF-8: a byte replaced while decoding


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


def read_raw_records(path: Path, source_file: str, chunk_size: int = 10_000) -> Iterator[pa.Table]:
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
    return _read_chunks(path, source_file, chunk_size)


def _read_chunks(path: Path, source_file: str, chunk_size: int) -> Iterator[pa.Table]:
    try:
        with path.open("rb") as stream:
            encoding = detect_encoding(stream.read(4))
            stream.seek(encoding.bom_length)
            rows = _rows(stream, encoding)
            while batch := list(islice(rows, chunk_size)):
                yield _to_table(source_file, batch)
    except OSError as error:
        raise UnreadableInput(f"cannot read {path}: {os_error_reason(error)}") from error


def _to_table(source_file: str, batch: list[_Row]) -> pa.Table:
    positions, raw_texts, hashes, formats, records, ids, errors = zip(*batch, strict=True)
    columns = {
        "source_file": pa.array([source_file] * len(batch), pa.string()),
        "position": pa.array(positions, pa.int64()),
        "raw_text": _utf8_array(raw_texts),
        "content_hash": pa.array(hashes, pa.string()),
        "source_format": pa.array(formats, pa.string()),
        "record_json": _utf8_array(records),
        "conversation_id": pa.array(ids, pa.string()),
        "parse_error": pa.array(errors, pa.string()),
    }
    return pa.Table.from_arrays(
        [columns[name] for name in RAW_RECORD_SCHEMA.names], schema=RAW_RECORD_SCHEMA
    )


def _utf8_array(values: tuple[bytes | None, ...]) -> pa.Array:
    # From bytes, never through Python strs; the cast validates UTF-8, in C.
    return pa.array(values, pa.large_binary()).cast(pa.large_string())


def _sniff(stream: BinaryIO, encoding: TextEncoding) -> tuple[str, DecodedText | None, Any]:
    """(layout, first line, its value) from the first two non-blank lines (module docstring).

    Layouts: "empty", "one_line" (one JSON value on one line), "document" (a value
    spread over many lines) and "lines" (JSON Lines). Reads from the current position.
    """
    lines = iter_lines(stream, encoding)
    first = next(lines, None)
    if first is None:
        return "empty", None, None
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


def _rows(stream: BinaryIO, encoding: TextEncoding) -> Iterator[_Row]:
    layout, first, value = _sniff(stream, encoding)
    stream.seek(encoding.bom_length)
    if layout == "one_line" and first is not None:
        yield from _document_rows(first, value)
    elif layout == "document":
        # A pretty-printed object or array is parsed as one value, so the whole file is
        # in memory here (JSON Lines, the format for big files, is streamed).
        document, value, error = _parse(read_document(stream, encoding), where="file")
        if error is not None:
            yield _broken_row(1, document, _describe(error))
        else:
            yield from _document_rows(document, value)
    elif layout == "lines":
        for line in iter_lines(stream, encoding):
            yield _line_row(*_parse(line))


# --- UTF-8 JSON Lines in byte ranges, one task each (see `workers`) ----------------------------

# About this many bytes of input per range: the tables of one range stay this order of size.
RANGE_BYTES = 16 << 20


@dataclass(frozen=True)
class LineRange:
    """Whole lines of a file: bytes [start, end), the first of them line `first_line`."""

    start: int
    end: int
    first_line: int


def json_lines_ranges(path: Path, range_bytes: int | None = None) -> list[LineRange] | None:
    """The file cut into ranges of whole lines, when it is UTF-8 JSON Lines; else None.

    A range holds about `range_bytes` (default RANGE_BYTES) bytes, and whole lines.

    Each range is read on its own by `read_line_range`, and together they give exactly
    the rows of `read_raw_records`. Raises UnreadableInput when the file cannot be read.
    """
    try:
        with path.open("rb") as stream:
            encoding = detect_encoding(stream.read(4))
            if not encoding.is_utf8:
                return None
            stream.seek(encoding.bom_length)
            if _sniff(stream, encoding)[0] != "lines":
                return None
            ranges = []
            start, line = encoding.bom_length, 1
            stream.seek(start)
            while block := stream.read(range_bytes or RANGE_BYTES):
                if not block.endswith(b"\n"):
                    block += stream.readline()  # to the end of the line the range cut
                ranges.append(LineRange(start, start + len(block), line))
                start += len(block)
                line += block.count(b"\n")
            return ranges
    except OSError as error:
        raise UnreadableInput(f"cannot read {path}: {os_error_reason(error)}") from error


def read_line_range(path: str, source_file: str, lines: LineRange) -> pa.Table:
    """Raw rows (RAW_RECORD_SCHEMA) of one range of a UTF-8 JSON Lines file."""
    try:
        with open(path, "rb") as stream:
            stream.seek(lines.start)
            data = stream.read(lines.end - lines.start)
    except OSError as error:
        raise UnreadableInput(f"cannot read {path}: {os_error_reason(error)}") from error
    rows = []
    with gc_paused():
        # As `iter_lines` reads them: split at LF, CR removed, blank lines counted, skipped.
        for number, line in enumerate(data.split(b"\n"), start=lines.first_line):
            line = line.rstrip(b"\r\n")
            if line and not line.isspace():
                rows.append(_line_row(*_parse(DecodedText(number, line))))
        return _to_table(source_file, rows) if rows else RAW_RECORD_SCHEMA.empty_table()


def _is_truncated_first_line(first: DecodedText, second: DecodedText | None) -> bool:
    """True for JSON Lines whose first record is cut short (a crashed writer)."""
    if second is None or not first.data.lstrip().startswith(b"{"):
        return False
    _, value, error = _parse(second)
    return error is None and isinstance(value, dict)


def _parse(
    text: DecodedText, where: str = "line"
) -> tuple[DecodedText, Any, orjson.JSONDecodeError | None]:
    """(text, value, error); `text` with U+FFFD for undecodable bytes when it had any."""
    try:
        return text, orjson.loads(text.data), None
    except orjson.JSONDecodeError as error:
        # orjson rejects invalid UTF-8 anywhere in its input: only now is it worth
        # checking the encoding, and parsing again what is left after repair.
        repaired = repair_utf8(text, where)
        if repaired is text:
            return text, None, error
    try:
        return repaired, orjson.loads(repaired.data), None
    except orjson.JSONDecodeError as error:
        return repaired, None, error


def _ran_out_of_data(payload: bytes, error: orjson.JSONDecodeError) -> bool:
    """True when `payload` is the valid start of a longer JSON value."""
    return "end of data" in error.msg or error.pos >= len(payload.rstrip())


def _describe(error: orjson.JSONDecodeError, line_number: int | None = None) -> str:
    # The parser of one JSON Lines line counts from 1: report the file's line number.
    line = error.lineno if line_number is None else line_number
    return f"invalid JSON at line {line} column {error.colno}: {error.msg}"


def _line_row(line: DecodedText, value: Any, error: orjson.JSONDecodeError | None) -> _Row:
    if error is not None:
        return _broken_row(line.number, line, _describe(error, line.number))
    return _record_row(line.number, line.data, value, line.decode_error)


def _document_rows(document: DecodedText, value: Any) -> Iterator[_Row]:
    if not isinstance(value, list):
        yield _record_row(1, document.data, value, document.decode_error)
        return
    for position, element in enumerate(value, start=1):
        raw_text = _serialize(element)
        # Flag only the elements that hold a replaced byte, not the whole array.
        decode_error = document.decode_error if _REPLACEMENT in raw_text else None
        yield _record_row(position, raw_text, element, decode_error)


def _record_row(position: int, raw_text: bytes, value: Any, decode_error: str | None) -> _Row:
    try:
        mapped = map_record(value)
    except orjson.JSONEncodeError as error:
        # orjson parses deeper nesting than it serializes: keep the row, unmapped.
        mapped = MappedRecord(
            "unknown", None, derive_conversation_id(raw_text), f"cannot map record: {error}"
        )
    parse_error = "; ".join(e for e in (decode_error, mapped.error) if e) or None
    return (
        position,
        raw_text,
        hashlib.sha256(raw_text).hexdigest(),
        mapped.source_format,
        mapped.record_json,
        mapped.conversation_id,
        parse_error,
    )


def _broken_row(position: int, text: DecodedText, error: str) -> _Row:
    parse_error = f"{text.decode_error}; {error}" if text.decode_error else error
    return (
        position,
        text.data,
        hashlib.sha256(text.data).hexdigest(),
        "unknown",
        None,
        derive_conversation_id(text.data),
        parse_error,
    )


def _serialize(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # Nesting deeper than orjson serializes: the stdlib has no such limit.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
