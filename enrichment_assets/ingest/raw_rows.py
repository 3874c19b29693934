"""The raw-row contract, and how one text of a file becomes one row.

A text that parses becomes a mapped record (`formats.map_record`) unless it breaks a
`RecordLimits`; one that does not parse, is not an object or breaks a limit becomes a
row with `parse_error` (one line, with its position) and `parse_rule` and no
`record_json`; a file that cannot be read at all is one row (`file_problem_table`).
Every reader of `raw_records` builds its rows here, so the rules are the same in all.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa

from enrichment_assets.ingest.encodings import (
    ENCODING_REPAIRED,
    DecodedText,
    OversizedLine,
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
Row = tuple[int, bytes, str, str, bytes | None, str, str | None, str | None]

_REPLACEMENT = "\ufffd".encode()  # U+FFFD as UTF-8: a byte replaced while decoding
# Bytes JSON text never holds raw (RFC 8259: control characters must be escaped).
_FORBIDDEN_BYTE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def file_problem_table(source_file: str, problem: FileProblem, sha256: str | None) -> pa.Table:
    """The one raw row of a file that could not be read at all: position 0, no text.

    Its id is derived from the file's name and content hash (or its problem, when it
    has no content), so that two such files never share an id.
    """
    identity = f"file\0{source_file}\0{sha256 or problem.rule}".encode()
    row: Row = (
        0,
        b"",
        _EMPTY_SHA256,
        "unknown",
        None,
        derive_conversation_id(identity),
        problem.reason,
        problem.rule,
    )
    return to_table(source_file, [row])


def to_table(source_file: str, batch: list[Row]) -> pa.Table:
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


def parse_text(
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


def ran_out_of_data(payload: bytes, error: orjson.JSONDecodeError) -> bool:
    """True when `payload` is the valid start of a longer JSON value."""
    return "end of data" in error.msg or error.pos >= len(payload.rstrip())


def describe_error(
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


def line_row(line: DecodedText | OversizedLine, limits: RecordLimits) -> Row:
    if isinstance(line, OversizedLine):
        return oversized_row(line, limits)
    text, value, error = parse_text(line)
    if error is not None:
        return broken_row(text.number, text, *describe_error(text, error))
    return _record_row(text.number, text.data, value, text.decode_error, limits)


def document_rows(document: DecodedText, value: Any, limits: RecordLimits) -> Iterator[Row]:
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
) -> Row:
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


def broken_row(position: int, text: DecodedText, rule: str, reason: str) -> Row:
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


def oversized_row(line: OversizedLine, limits: RecordLimits) -> Row:
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
