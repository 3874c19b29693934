"""A bad line, byte or record costs only itself: line-level decoding and record limits.

Real files in tmp_path, read by every reader of the raw layer (the whole-file reader
and the byte-range reader of the worker processes), which must agree row for row.
"""

from __future__ import annotations

import codecs
import hashlib
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from enrichment_assets.defs.resources import LakeResource
from enrichment_assets.ingest import (
    CONVERSATION_ID_NAMESPACE,
    RecordLimits,
    json_lines_ranges,
    read_line_range,
    read_raw_records,
)
from tests.factories import conversation, message


def rows_whole(path: Path, limits: RecordLimits = RecordLimits(), chunk: int = 10_000) -> list:
    tables = read_raw_records(path, "in.jsonl", chunk_size=chunk, limits=limits)
    return [row for table in tables for row in table.to_pylist()]


def rows_in_ranges(path: Path, limits: RecordLimits = RecordLimits(), **cut: Any) -> list:
    ranges = json_lines_ranges(path, limits=limits, **cut)
    assert ranges is not None
    return [
        row for r in ranges for row in read_line_range(str(path), "in.jsonl", r, limits).to_pylist()
    ]


def write_lines(path: Path, lines: list[bytes], prefix: bytes = b"") -> Path:
    path.write_bytes(prefix + b"\n".join(lines) + b"\n")
    return path


def line(record: dict) -> bytes:
    return orjson.dumps(record)


def test_a_raw_nul_costs_its_line_only_and_names_its_byte_position(tmp_path):
    good = line(conversation())
    bad = line(conversation()).replace(b"Hello", b"Hel\x00lo").replace(b"cannot", b"can\x00not")
    path = write_lines(tmp_path / "nul.jsonl", [good, bad, good], prefix=codecs.BOM_UTF8)
    rows = rows_whole(path)

    assert [r["parse_rule"] for r in rows] == [None, "forbidden_bytes", None]
    byte = len(codecs.BOM_UTF8) + len(good) + 1 + bad.index(b"\x00") + 1
    assert rows[1]["parse_error"] == (
        f"raw control byte 0x00 at byte {byte} of the file (line 2): not allowed in JSON text"
    )
    assert rows[1]["record_json"] is None and "\x00" in rows[1]["raw_text"]
    assert rows_in_ranges(path, range_bytes=64) == rows


def test_many_stray_bytes_in_one_line_are_each_read_as_cp1252_and_flagged(tmp_path):
    record = conversation(
        messages=[message("user", "na\u00efve \u2018quotes\u2019"), message("assistant")]
    )
    raw = line(record).replace("ï".encode(), b"\xef").replace("‘".encode(), b"\x91")
    raw = raw.replace("’".encode(), b"\x92")
    rows = rows_whole(write_lines(tmp_path / "cp1252.jsonl", [raw]))

    assert rows[0]["parse_rule"] == "encoding_repaired"
    assert orjson.loads(rows[0]["record_json"])["messages"][0]["content"] == (
        "na\u00efve \u2018quotes\u2019"
    )


@pytest.mark.parametrize(
    ("limits", "record", "rule", "reason"),
    [
        (
            RecordLimits(max_nesting_depth=5),
            conversation(extra=[[[[["deep"]]]]]),
            "nesting_too_deep",
            "nested more than 5 levels deep (the limit is 5)",
        ),
        (
            RecordLimits(max_messages=4),
            conversation(),  # five messages
            "too_many_messages",
            "5 messages, over the limit of 4",
        ),
        (
            RecordLimits(max_message_chars=10),
            conversation(messages=[message("user", "x" * 11), message("assistant", "ok")]),
            "message_too_long",
            "message 0 has 11 characters, over the limit of 10",
        ),
        (
            RecordLimits(max_message_chars=10),
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "y" * 12}]}]},
            "message_too_long",
            "message 0 has 12 characters, over the limit of 10",
        ),
    ],
)
def test_a_record_past_a_limit_is_a_row_with_the_limits_rule_in_every_reader(
    tmp_path, limits, record, rule, reason
):
    good = line(conversation(messages=[message("user", "hi"), message("assistant", "yo")]))
    jsonl = write_lines(tmp_path / "in.jsonl", [good, line(record), good])
    array = tmp_path / "in.json"
    array.write_bytes(
        orjson.dumps([orjson.loads(good), record, orjson.loads(good)], option=orjson.OPT_INDENT_2)
    )

    for rows in (
        rows_whole(jsonl, limits),
        rows_in_ranges(jsonl, limits),
        rows_whole(array, limits),
    ):
        assert [r["parse_rule"] for r in rows] == [None, rule, None]
        assert rows[1]["parse_error"] == reason
        assert rows[1]["record_json"] is None
    given = record.get("conversation_id")
    if given is not None:  # the record's own id, so `enrich status ID` finds it
        assert rows_whole(jsonl, limits)[1]["conversation_id"] == given


def test_a_line_over_the_size_limit_is_measured_as_it_streams_and_the_next_lines_go_on(tmp_path):
    limits = RecordLimits(max_record_bytes=64 * 1024)
    huge = line(conversation(messages=[message("user", "z" * 1_000_000), message("assistant")]))
    good = line(conversation())
    path = write_lines(tmp_path / "huge.jsonl", [good, huge, good, huge + b"\r"])

    rows = rows_whole(path, limits)
    assert [r["parse_rule"] for r in rows] == [None, "record_too_large", None, "record_too_large"]
    oversized = rows[1]
    assert oversized["parse_error"] == (
        f"record of {len(huge)} bytes is over the limit of {64 * 1024} bytes: not read "
        f"(line 2, byte {len(good) + 2} of the file)"
    )
    assert oversized["raw_text"] == huge[:1024].decode()  # as much as is safe to show
    assert oversized["content_hash"] == hashlib.sha256(huge).hexdigest()
    assert oversized["conversation_id"] == str(uuid.uuid5(CONVERSATION_ID_NAMESPACE, huge.decode()))
    assert rows[3]["content_hash"] == oversized["content_hash"]  # CRLF: the line end is not text
    assert rows_in_ranges(path, limits, range_bytes=1000) == rows


def test_a_single_line_object_over_the_size_limit_is_one_row(tmp_path):
    limits = RecordLimits(max_record_bytes=1000)
    path = tmp_path / "one.json"
    path.write_bytes(orjson.dumps(conversation(messages=[message("user", "w" * 5000)])))

    (row,) = rows_whole(path, limits)
    assert row["parse_rule"] == "record_too_large" and row["position"] == 1


def test_a_single_line_array_over_the_size_limit_holds_each_element_to_it(tmp_path):
    limits = RecordLimits(max_record_bytes=1000)
    small = [conversation() for _ in range(9)]
    big = conversation(messages=[message("user", "w" * 5000), message("assistant")])
    path = tmp_path / "one.json"
    path.write_bytes(orjson.dumps([*small[:4], big, *small[4:]]))

    rows = rows_whole(path, limits)
    assert [row["position"] for row in rows] == list(range(1, 11))
    assert [row["parse_rule"] for row in rows] == [None] * 4 + ["record_too_large"] + [None] * 5


def test_a_pretty_object_over_the_size_limit_is_one_row_never_loaded(tmp_path):
    limits = RecordLimits(max_record_bytes=1000)
    record = conversation(messages=[message("user", "w" * 5000), message("assistant")])
    path = tmp_path / "pretty.json"
    data = orjson.dumps(record, option=orjson.OPT_INDENT_2)
    path.write_bytes(data)

    (row,) = rows_whole(path, limits)
    assert row["parse_rule"] == "record_too_large"
    assert row["content_hash"] == hashlib.sha256(data).hexdigest()


def test_line_ranges_hold_at_most_max_rows_lines_whatever_their_bytes(tmp_path):
    lines = [b"x" if i % 3 else line(conversation()) for i in range(1000)]
    path = write_lines(tmp_path / "short.jsonl", lines)

    ranges = json_lines_ranges(path, range_bytes=1 << 20, max_rows=70)
    assert ranges is not None and len(ranges) == 15
    data = path.read_bytes()
    assert all(data[r.start : r.end].count(b"\n") <= 70 for r in ranges)
    assert rows_in_ranges(path, range_bytes=1 << 20, max_rows=70) == rows_whole(path)
    assert [len(t) for t in read_raw_records(path, "in.jsonl", chunk_size=70)][:2] == [70, 70]


def test_limits_come_from_the_environment_or_the_lake_resource(monkeypatch):
    monkeypatch.setenv("ENRICH_MAX_RECORD_BYTES", "1000")
    monkeypatch.setenv("ENRICH_MAX_NESTING_DEPTH", "9")
    monkeypatch.setenv("ENRICH_MAX_MESSAGES", "7")
    monkeypatch.setenv("ENRICH_MAX_MESSAGE_CHARS", "99")
    assert LakeResource().limits == RecordLimits(1000, 9, 7, 99)
    assert LakeResource(max_messages=3, max_nesting_depth=20).limits == RecordLimits(
        1000, 20, 3, 99
    )
    monkeypatch.setenv("ENRICH_MAX_NESTING_DEPTH", "500")  # past what the validated layer parses
    with pytest.raises(ValueError, match="max_nesting_depth=500: expected 1 to 190"):
        _ = LakeResource().limits
    monkeypatch.setenv("ENRICH_MAX_NESTING_DEPTH", "many")
    with pytest.raises(ValueError, match="ENRICH_MAX_NESTING_DEPTH='many'"):
        _ = LakeResource().limits
