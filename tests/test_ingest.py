"""Ingest: real files in tmp_path -> raw rows; every format, encoding and failure kept."""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from enrichment_assets.ingest import (
    CONVERSATION_ID_NAMESPACE,
    RAW_RECORD_SCHEMA,
    UnreadableInput,
    json_lines_ranges,
    read_line_range,
    read_raw_records,
)
from enrichment_assets.ingest.files import content_problem
from enrichment_assets.ingest.limits import RecordLimits


def sniff_unreadable(path: Path) -> str | None:
    """The reason a file cannot be ingested at all, or None."""
    with path.open("rb") as stream:
        problem = content_problem(stream)
    return None if problem is None else problem.reason


# --- factories ---------------------------------------------------------------------


def canonical_record(**overrides: Any) -> dict[str, Any]:
    record = {
        "conversation_id": str(uuid.uuid4()),
        "user_id": "user-1",
        "template_id": "template-1",
        "persona_id": "persona-1",
        "emotional_arc_id": "arc-1",
        "training_topic_id": "topic-1",
        "tier": "template",
        "created_at": "2024-05-01T10:00:00Z",
        "messages": [
            {"role": "user", "content": "How do I reset my password?"},
            {"role": "assistant", "content": "Open Settings, then Security."},
        ],
    }
    record.update(overrides)
    return record


def openai_record(*contents: Any) -> dict[str, Any]:
    contents = contents or ("Hello", "Hi, how can I help?")
    roles = ["user" if i % 2 == 0 else "assistant" for i in range(len(contents))]
    return {"messages": [{"role": r, "content": c} for r, c in zip(roles, contents, strict=True)]}


def sharegpt_record(*turns: tuple[str, str], **extra: Any) -> dict[str, Any]:
    turns = turns or (("human", "Hello"), ("gpt", "Hi there"))
    return {"conversations": [{"from": f, "value": v} for f, v in turns], **extra}


# Python codec that writes the BOM itself, or (codec, BOM) to prepend by hand.
ENCODINGS = {
    "utf-8": ("utf-8", b""),
    "utf-8-bom": ("utf-8", codecs.BOM_UTF8),
    "utf-16-le-bom": ("utf-16-le", codecs.BOM_UTF16_LE),
    "utf-16-be-bom": ("utf-16-be", codecs.BOM_UTF16_BE),
    "utf-32-le-bom": ("utf-32-le", codecs.BOM_UTF32_LE),
    "utf-32-be-bom": ("utf-32-be", codecs.BOM_UTF32_BE),
}


def write_text(path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> Path:
    codec, bom = ENCODINGS[encoding]
    path.write_bytes(bom + text.replace("\n", newline).encode(codec))
    return path


def write_jsonl(path: Path, records: list[Any], **options: Any) -> Path:
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return write_text(path, text, **options)


def write_json(path: Path, value: Any, indent: int | None = None, **options: Any) -> Path:
    return write_text(path, json.dumps(value, ensure_ascii=False, indent=indent), **options)


def read_rows(path: Path, chunk_size: int = 10_000) -> list[dict[str, Any]]:
    return [
        row
        for table in read_raw_records(path, path.name, chunk_size=chunk_size)
        for row in table.to_pylist()
    ]


def records_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [orjson.loads(row["record_json"]) for row in rows]


# --- file layouts ------------------------------------------------------------------


def test_reads_single_object_file_as_one_row_at_position_1(tmp_path):
    record = canonical_record()
    rows = read_rows(write_json(tmp_path / "one.json", record))

    assert len(rows) == 1
    assert rows[0]["position"] == 1
    assert rows[0]["source_file"] == "one.json"
    assert rows[0]["source_format"] == "canonical"
    assert rows[0]["parse_error"] is None
    assert records_of(rows) == [record]


def test_reads_pretty_printed_object_spanning_many_lines(tmp_path):
    record = canonical_record()
    rows = read_rows(write_json(tmp_path / "pretty.json", record, indent=2))

    assert [row["position"] for row in rows] == [1]
    assert records_of(rows) == [record]
    assert rows[0]["conversation_id"] == record["conversation_id"]


def test_reads_array_elements_as_rows_numbered_from_1(tmp_path):
    records = [canonical_record() for _ in range(3)]
    rows = read_rows(write_json(tmp_path / "array.json", records))

    assert [row["position"] for row in rows] == [1, 2, 3]
    assert records_of(rows) == records
    assert [row["raw_text"] for row in rows] == [orjson.dumps(r).decode() for r in records]


def test_a_one_line_array_over_the_record_limit_is_read_element_by_element(tmp_path):
    # A compact export: the whole array on one line, longer than one record may be.
    records = [canonical_record() for _ in range(40)]
    path = write_json(tmp_path / "export.json", records)
    limits = RecordLimits(max_record_bytes=path.stat().st_size // 4)
    rows = [
        row
        for table in read_raw_records(path, path.name, limits=limits)
        for row in table.to_pylist()
    ]

    assert [row["position"] for row in rows] == list(range(1, 41))
    assert records_of(rows) == records


def test_a_one_line_object_over_the_record_limit_stays_one_record_too_large(tmp_path):
    record = canonical_record()
    path = write_json(tmp_path / "big.json", record)
    limits = RecordLimits(max_record_bytes=path.stat().st_size // 4)
    rows = [
        row
        for table in read_raw_records(path, path.name, limits=limits)
        for row in table.to_pylist()
    ]

    assert len(rows) == 1
    assert "over the limit" in (rows[0]["parse_error"] or "")


def test_reads_pretty_printed_array(tmp_path):
    records = [canonical_record(), openai_record()]
    rows = read_rows(write_json(tmp_path / "array.json", records, indent=4))

    assert [row["position"] for row in rows] == [1, 2]
    assert [row["source_format"] for row in rows] == ["canonical", "openai"]
    assert all(row["parse_error"] is None for row in rows)


def test_reads_pretty_printed_array_whose_elements_fit_on_one_line(tmp_path):
    records = [canonical_record(), canonical_record()]
    text = "[\n" + ",\n".join(json.dumps(r) for r in records[:1]) + ",\n"
    text += json.dumps(records[1]) + "\n]\n"
    rows = read_rows(write_text(tmp_path / "array.json", text))

    assert records_of(rows) == records


def test_reads_jsonl_rows_numbered_by_line(tmp_path):
    records = [canonical_record() for _ in range(4)]
    rows = read_rows(write_jsonl(tmp_path / "batch.jsonl", records))

    assert [row["position"] for row in rows] == [1, 2, 3, 4]
    assert records_of(rows) == records
    assert [row["raw_text"] for row in rows] == [json.dumps(r) for r in records]


def test_sniffs_layout_from_content_not_extension(tmp_path):
    records = [canonical_record(), canonical_record()]
    rows = read_rows(write_jsonl(tmp_path / "looks-like-an-array.json", records))

    assert records_of(rows) == records


def test_skips_blank_lines_but_keeps_line_numbers(tmp_path):
    first, second = canonical_record(), canonical_record()
    text = f"\n{json.dumps(first)}\n\n   \n{json.dumps(second)}\n\n"
    rows = read_rows(write_text(tmp_path / "gaps.jsonl", text))

    assert [row["position"] for row in rows] == [2, 5]
    assert records_of(rows) == [first, second]


def test_empty_file_yields_no_tables(tmp_path):
    path = write_text(tmp_path / "empty.jsonl", "\n  \n")

    assert list(read_raw_records(path, "empty.jsonl")) == []


# --- encodings ---------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_reads_jsonl_in_each_encoding(tmp_path, encoding):
    records = [canonical_record(), openai_record("Grüße", "¡Hola! 👋")]
    rows = read_rows(write_jsonl(tmp_path / "batch.jsonl", records, encoding=encoding))

    assert [row["position"] for row in rows] == [1, 2]
    assert [row["parse_error"] for row in rows] == [None, None]
    assert records_of(rows)[0] == records[0]
    assert records_of(rows)[1]["messages"] == records[1]["messages"]
    assert rows[0]["raw_text"] == json.dumps(records[0])  # no BOM left in the text


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_reads_pretty_array_in_each_encoding(tmp_path, encoding):
    records = [canonical_record(), canonical_record()]
    rows = read_rows(write_json(tmp_path / "a.json", records, indent=2, encoding=encoding))

    assert records_of(rows) == records


def test_reads_utf16_le_jsonl_with_bom(tmp_path):
    record = canonical_record()
    path = tmp_path / "batch.jsonl"
    # Python's "utf-16" codec writes a BOM in the machine's order (LE on x86/ARM).
    path.write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n", encoding="utf-16")

    assert records_of(read_rows(path)) == [record, record]


def test_reads_utf16_without_bom_by_its_nul_pattern(tmp_path):
    record = canonical_record()
    path = tmp_path / "batch.jsonl"
    path.write_bytes((json.dumps(record) + "\n").encode("utf-16-be"))

    assert records_of(read_rows(path)) == [record]
    assert sniff_unreadable(path) is None


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-bom", "utf-16-le-bom"])
def test_strips_crlf_line_ends_from_raw_text(tmp_path, encoding):
    records = [canonical_record(), canonical_record()]
    path = write_jsonl(tmp_path / "crlf.jsonl", records, encoding=encoding, newline="\r\n")
    rows = read_rows(path)

    assert [row["raw_text"] for row in rows] == [json.dumps(r) for r in records]
    assert [row["position"] for row in rows] == [1, 2]


def test_reads_pretty_object_with_crlf_line_ends(tmp_path):
    record = canonical_record()
    rows = read_rows(write_json(tmp_path / "o.json", record, indent=2, newline="\r\n"))

    assert records_of(rows) == [record]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le-bom", "utf-32-be-bom"])
def test_non_ascii_content_survives_byte_exactly(tmp_path, encoding):
    # Emoji (astral, ZWJ sequence), CJK, precomposed and combining accents, RTL.
    texts = ["👩‍💻 café", "你好，世界", "Cafe\u0301 naïve Ærøskøbing", "مرحبا"]
    record = canonical_record(
        messages=[{"role": "user", "content": texts[0]}]
        + [{"role": "assistant", "content": text} for text in texts[1:]]
    )
    for layout, path in [
        ("jsonl", write_jsonl(tmp_path / "u.jsonl", [record, record], encoding=encoding)),
        ("array", write_json(tmp_path / "u.json", [record], indent=1, encoding=encoding)),
    ]:
        row = read_rows(path)[0]
        contents = [m["content"] for m in orjson.loads(row["record_json"])["messages"]]
        assert [c.encode() for c in contents] == [t.encode() for t in texts], layout
        assert texts[1] in row["raw_text"], layout


def test_a_stray_latin1_byte_is_read_as_cp1252_and_flagged_on_its_line_only(tmp_path):
    good = json.dumps(canonical_record()).encode()
    bad = json.dumps(openai_record("caf\udce9", "ok"), ensure_ascii=False).encode(
        "utf-8", "surrogateescape"
    )  # a lone Latin-1 0xE9 byte inside a string
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(good + b"\n" + bad + b"\n" + good + b"\n")
    rows = read_rows(path)

    assert [row["position"] for row in rows] == [1, 2, 3]
    assert rows[0]["parse_error"] is None and rows[2]["parse_error"] is None
    byte = len(good) + 1 + bad.index(b"\xe9") + 1
    assert rows[1]["parse_error"].startswith(f"invalid UTF-8 at byte {byte} of the file (line 2)")
    assert rows[1]["parse_rule"] == "encoding_repaired"
    assert "café" in rows[1]["raw_text"]
    assert orjson.loads(rows[1]["record_json"])["messages"][0]["content"] == "café"
    assert rows[1]["content_hash"] == hashlib.sha256(rows[1]["raw_text"].encode()).hexdigest()


# --- broken records ----------------------------------------------------------------


def test_keeps_broken_line_as_row_with_parse_error_and_position(tmp_path):
    records = [canonical_record() for _ in range(4)]
    lines = [json.dumps(r) for r in records]
    lines[2] = '{"conversation_id": "x", "messages": [oops]}'
    rows = read_rows(write_text(tmp_path / "b.jsonl", "\n".join(lines) + "\n"))

    assert [row["position"] for row in rows] == [1, 2, 3, 4]
    broken = rows[2]
    assert broken["parse_error"].startswith("invalid JSON at line 3 column ")
    assert "\n" not in broken["parse_error"]
    assert broken["raw_text"] == lines[2]
    assert broken["record_json"] is None
    assert broken["source_format"] == "unknown"
    # A record that did not parse gets an id derived from its raw text.
    assert broken["conversation_id"] == str(uuid.uuid5(CONVERSATION_ID_NAMESPACE, lines[2]))
    assert [row["parse_error"] for row in rows if row is not broken] == [None] * 3


def test_keeps_truncated_last_line_of_jsonl(tmp_path):
    text = json.dumps(canonical_record()) + "\n" + json.dumps(canonical_record())[:40]
    rows = read_rows(write_text(tmp_path / "t.jsonl", text))

    assert [row["parse_error"] is None for row in rows] == [True, False]
    assert "unexpected end of data" in rows[1]["parse_error"]


def test_keeps_records_after_truncated_first_line_of_jsonl(tmp_path):
    records = [canonical_record() for _ in range(3)]
    text = json.dumps(records[0])[:50] + "\n" + "".join(json.dumps(r) + "\n" for r in records[1:])
    rows = read_rows(write_text(tmp_path / "t.jsonl", text))

    assert [row["position"] for row in rows] == [1, 2, 3]
    assert rows[0]["parse_error"] is not None
    assert records_of(rows[1:]) == records[1:]


def test_broken_pretty_document_is_one_row_with_error_line_and_column(tmp_path):
    text = json.dumps(canonical_record(), indent=2).replace('"tier"', "tier", 1)
    rows = read_rows(write_text(tmp_path / "broken.json", text))

    assert len(rows) == 1
    assert rows[0]["raw_text"] == text
    assert rows[0]["record_json"] is None
    assert rows[0]["parse_error"].startswith("invalid JSON at line 8 column 3:")


@pytest.mark.parametrize(
    ("element", "kind"),
    [([1, 2], "array"), ("text", "string"), (3.5, "number"), (True, "boolean"), (None, "null")],
)
def test_non_object_element_is_row_with_error(tmp_path, element, kind):
    rows = read_rows(write_json(tmp_path / "a.json", [canonical_record(), element]))

    assert rows[1]["position"] == 2
    assert rows[1]["source_format"] == "unknown"
    assert rows[1]["record_json"] is None
    assert rows[1]["parse_error"] == f"record is a JSON {kind}, expected an object"
    assert uuid.UUID(rows[1]["conversation_id"])


def test_unknown_object_is_kept_as_is_with_derived_id(tmp_path):
    record = {"prompt": "Say hi", "completion": "Hi"}
    row = read_rows(write_jsonl(tmp_path / "u.jsonl", [record, record]))[0]

    assert row["source_format"] == "unknown"
    assert row["parse_error"] is None
    assert orjson.loads(row["record_json"]) == {**record, "conversation_id": row["conversation_id"]}


def test_nesting_past_the_depth_limit_is_a_row_with_the_limits_rule(tmp_path):
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]
    rows = read_rows(write_json(tmp_path / "deep.json", [{"messages": deep}, canonical_record()]))

    assert [row["position"] for row in rows] == [1, 2]
    assert rows[0]["record_json"] is None
    assert rows[0]["parse_rule"] == "nesting_too_deep"
    assert rows[0]["parse_error"] == "nested more than 64 levels deep (the limit is 64)"
    assert rows[1]["parse_error"] is None


# --- chunking and schema -----------------------------------------------------------


def test_chunks_five_records_into_three_tables_with_continuous_positions(tmp_path):
    path = write_jsonl(tmp_path / "five.jsonl", [canonical_record() for _ in range(5)])
    tables = list(read_raw_records(path, "five.jsonl", chunk_size=2))

    assert [table.num_rows for table in tables] == [2, 2, 1]
    assert [p for table in tables for p in table.column("position").to_pylist()] == [
        1,
        2,
        3,
        4,
        5,
    ]


def test_chunks_array_elements_too(tmp_path):
    path = write_json(tmp_path / "a.json", [canonical_record() for _ in range(5)], indent=2)
    tables = list(read_raw_records(path, "a.json", chunk_size=2))

    assert [table.num_rows for table in tables] == [2, 2, 1]


def test_every_table_has_raw_record_schema_and_source_file_as_given(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [canonical_record(), "broken"])
    tables = list(read_raw_records(path, "landing/2024/s.jsonl", chunk_size=1))

    assert all(table.schema.equals(RAW_RECORD_SCHEMA) for table in tables)
    assert {t.column("source_file")[0].as_py() for t in tables} == {"landing/2024/s.jsonl"}


def test_content_hash_is_sha256_of_raw_text(tmp_path):
    rows = read_rows(write_jsonl(tmp_path / "h.jsonl", [canonical_record(), openai_record()]))

    for row in rows:
        assert row["content_hash"] == hashlib.sha256(row["raw_text"].encode()).hexdigest()


def test_rejects_chunk_size_below_one(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [canonical_record()])

    with pytest.raises(ValueError, match="chunk_size"):
        read_raw_records(path, "c.jsonl", chunk_size=0)


# --- mapping onto the canonical shape ----------------------------------------------


def test_maps_openai_chat_record_to_canonical_shape(tmp_path):
    record = openai_record("What is 2+2?", "4")
    row = read_rows(write_jsonl(tmp_path / "o.jsonl", [record, record]))[0]
    mapped = orjson.loads(row["record_json"])

    assert row["source_format"] == "openai"
    assert mapped["messages"] == record["messages"]
    assert mapped["conversation_id"] == row["conversation_id"]
    assert mapped["user_id"] is None and mapped["tier"] is None


def test_canonical_field_besides_messages_makes_record_canonical(tmp_path):
    record = {**openai_record(), "user_id": "u-7"}
    row = read_rows(write_json(tmp_path / "c.json", record))[0]

    assert row["source_format"] == "canonical"
    assert orjson.loads(row["record_json"])["user_id"] == "u-7"


def test_turns_alias_becomes_messages(tmp_path):
    record = canonical_record()
    record["turns"] = record.pop("messages")
    row = read_rows(write_json(tmp_path / "t.json", record))[0]
    mapped = orjson.loads(row["record_json"])

    assert row["source_format"] == "canonical"
    assert mapped["messages"] == record["turns"]
    assert "turns" not in mapped


def test_keeps_canonical_values_verbatim_without_validating(tmp_path):
    record = canonical_record(
        conversation_id="not-a-uuid",
        tier="legendary",
        created_at="yesterday-ish",
        messages=[{"role": "narrator", "content": ""}, {"role": "user", "content": "  x  "}],
    )
    row = read_rows(write_json(tmp_path / "v.json", record))[0]

    assert row["parse_error"] is None
    assert row["conversation_id"] == "not-a-uuid"
    assert orjson.loads(row["record_json"]) == record


def test_non_string_conversation_id_is_kept_and_stringified(tmp_path):
    row = read_rows(write_json(tmp_path / "n.json", canonical_record(conversation_id=123)))[0]

    assert row["conversation_id"] == "123"
    assert orjson.loads(row["record_json"])["conversation_id"] == 123


@pytest.mark.parametrize(
    ("speaker", "role"),
    [
        ("human", "user"),
        ("user", "user"),
        ("gpt", "assistant"),
        ("chatgpt", "assistant"),
        ("bard", "assistant"),
        ("bing", "assistant"),
        ("model", "assistant"),
        ("bot", "assistant"),
        ("GPT", "assistant"),
        ("system", "system"),
        ("tool", "tool"),
    ],
)
def test_maps_sharegpt_speaker_to_role(tmp_path, speaker, role):
    record = sharegpt_record((speaker, "some text"))
    row = read_rows(write_json(tmp_path / "s.json", record))[0]

    assert row["source_format"] == "sharegpt"
    assert orjson.loads(row["record_json"])["messages"] == [{"role": role, "content": "some text"}]


def test_uses_sharegpt_uuid_id_as_conversation_id(tmp_path):
    conversation_id = str(uuid.uuid4())
    row = read_rows(write_json(tmp_path / "s.json", sharegpt_record(id=conversation_id)))[0]

    assert row["conversation_id"] == conversation_id
    assert orjson.loads(row["record_json"])["conversation_id"] == conversation_id


def test_derives_id_when_sharegpt_id_is_not_a_uuid(tmp_path):
    row = read_rows(write_json(tmp_path / "s.json", sharegpt_record(id="QWJjZA_12")))[0]

    assert row["conversation_id"] != "QWJjZA_12"
    assert uuid.UUID(row["conversation_id"]).version == 5


def test_joins_openai_text_content_parts_with_newlines(tmp_path):
    parts = [
        {"type": "text", "text": "First line"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "Second line"},
    ]
    record = openai_record(parts, [{"type": "text", "text": "Answer"}])
    row = read_rows(write_json(tmp_path / "p.json", record))[0]
    messages = orjson.loads(row["record_json"])["messages"]

    assert [m["content"] for m in messages] == ["First line\nSecond line", "Answer"]


def test_content_parts_without_text_pass_through_for_validation(tmp_path):
    parts = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    row = read_rows(write_json(tmp_path / "p.json", openai_record(parts, "ok")))[0]

    assert orjson.loads(row["record_json"])["messages"][0]["content"] == parts


# --- derived conversation ids ------------------------------------------------------


def test_derived_id_is_the_same_when_the_same_content_is_reingested(tmp_path):
    record = openai_record()
    first = read_rows(write_jsonl(tmp_path / "a.jsonl", [record, record]))
    again = read_rows(write_jsonl(tmp_path / "b.jsonl", [record, record]))

    assert first[0]["conversation_id"] == again[0]["conversation_id"] == first[1]["conversation_id"]
    assert uuid.UUID(first[0]["conversation_id"]).version == 5


def test_derived_id_ignores_whitespace_key_order_and_layout(tmp_path):
    record = openai_record()
    reordered = {
        "messages": [{"content": m["content"], "role": m["role"]} for m in record["messages"]]
    }
    ids = {
        read_rows(write_json(tmp_path / "compact.json", record))[0]["conversation_id"],
        read_rows(write_json(tmp_path / "pretty.json", reordered, indent=3))[0]["conversation_id"],
        read_rows(write_json(tmp_path / "array.json", [record], indent=1))[0]["conversation_id"],
        read_rows(write_jsonl(tmp_path / "l.jsonl", [record, record], encoding="utf-16-le-bom"))[0][
            "conversation_id"
        ],
    }

    assert len(ids) == 1


def test_derived_id_is_uuid5_of_the_mapped_record_without_id_keys_sorted(tmp_path):
    row = read_rows(write_json(tmp_path / "o.json", openai_record()))[0]
    mapped = orjson.loads(row["record_json"])
    del mapped["conversation_id"]
    content = orjson.dumps(mapped, option=orjson.OPT_SORT_KEYS).decode()

    assert row["conversation_id"] == str(uuid.uuid5(CONVERSATION_ID_NAMESPACE, content))


def test_derived_id_differs_for_different_content(tmp_path):
    rows = read_rows(write_jsonl(tmp_path / "d.jsonl", [openai_record("a"), openai_record("b")]))

    assert rows[0]["conversation_id"] != rows[1]["conversation_id"]


def test_null_conversation_id_is_derived(tmp_path):
    row = read_rows(write_json(tmp_path / "n.json", canonical_record(conversation_id=None)))[0]

    assert uuid.UUID(row["conversation_id"]).version == 5
    assert orjson.loads(row["record_json"])["conversation_id"] == row["conversation_id"]


# --- unreadable input --------------------------------------------------------------


def test_missing_file_raises_unreadable_input_at_call_time(tmp_path):
    with pytest.raises(UnreadableInput, match="no such file") as raised:
        read_raw_records(tmp_path / "nope.jsonl", "nope.jsonl")

    assert "\n" not in str(raised.value)


def test_directory_raises_unreadable_input(tmp_path):
    with pytest.raises(UnreadableInput, match="is a directory"):
        read_raw_records(tmp_path, "dir")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "cannot be read: binary content"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "cannot be read: binary content"),
        (bytes(range(256)) * 64, "cannot be read: binary content"),
        (b"", "cannot be read: empty file"),
        (b"  \n\r\n\t", "cannot be read: empty file"),
        (codecs.BOM_UTF8, "cannot be read: empty file"),
        (b" " * 200_000, "cannot be read: empty file"),
        (codecs.BOM_UTF16_LE + b"{\x00\x00\xdc", "cannot be read: binary content"),
    ],
)
def test_content_problem_reports_a_file_that_is_no_text(tmp_path, content, reason):
    path = tmp_path / "input.jsonl"
    path.write_bytes(content)

    assert sniff_unreadable(path).startswith(reason)


@pytest.mark.parametrize(
    "content",
    [
        b'{"content": "caf\xe9"}\n',  # a stray byte costs its line only
        b'{"a": 1}\n{"content": "x\x00"}\n{"b": 2}\n',  # so does a raw NUL
        b"garbage first line\n" + b'{"a": 1}\n' * 3,  # a broken first line of JSON Lines
    ],
)
def test_content_problem_leaves_a_bad_line_to_its_line(tmp_path, content):
    path = tmp_path / "input.jsonl"
    path.write_bytes(content)

    assert sniff_unreadable(path) is None


def test_content_problem_reports_text_that_is_not_json(tmp_path):
    path = write_text(tmp_path / "notes.txt", "user,message\nalice,hi\n")

    assert sniff_unreadable(path).startswith("cannot be read: not JSON text")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_sniff_accepts_json_text_in_each_encoding(tmp_path, encoding):
    jsonl = write_jsonl(tmp_path / "a.jsonl", [canonical_record()], encoding=encoding)
    pretty = write_json(tmp_path / "a.json", [canonical_record()], indent=2, encoding=encoding)

    assert sniff_unreadable(jsonl) is None
    assert sniff_unreadable(pretty) is None


# --- UTF-8 JSON Lines in byte ranges -----------------------------------------------


def read_in_ranges(path: Path, range_bytes: int) -> list[dict[str, Any]]:
    ranges = json_lines_ranges(path, range_bytes)
    assert ranges is not None
    return [row for r in ranges for row in read_line_range(str(path), "in.jsonl", r).to_pylist()]


def messy_jsonl(path: Path, bom: bytes = b"") -> Path:
    """Every kind of line JSON Lines holds: CRLF, blanks, broken JSON, bad UTF-8, no last LF."""
    lines = [
        orjson.dumps(canonical_record()),
        b"",
        orjson.dumps(openai_record("caf\xc3\xa9", "ok")) + b"\r",
        b"   ",
        b'{"broken": ',
        orjson.dumps(sharegpt_record()),
        b'{"messages": [{"role": "user", "content": "bad \xff byte"}]}',
        b"[1, 2]",
        orjson.dumps(canonical_record(tier="nope")) + b"\r",
        orjson.dumps(canonical_record()),
    ]
    path.write_bytes(bom + b"\n".join(lines))
    return path


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
@pytest.mark.parametrize("range_bytes", [1, 7, 64, 300, 1 << 20])
def test_line_ranges_give_exactly_the_rows_of_the_whole_file(tmp_path, bom, range_bytes):
    path = messy_jsonl(tmp_path / "in.jsonl", bom)
    whole = [row for t in read_raw_records(path, "in.jsonl") for row in t.to_pylist()]
    assert [r["position"] for r in whole] == [1, 3, 5, 6, 7, 8, 9, 10]
    assert read_in_ranges(path, range_bytes) == whole


def test_line_ranges_cover_the_file_in_whole_lines(tmp_path):
    path = messy_jsonl(tmp_path / "in.jsonl", codecs.BOM_UTF8)
    ranges = json_lines_ranges(path, 64)
    assert ranges is not None and len(ranges) > 3
    assert ranges[0].start == len(codecs.BOM_UTF8) and ranges[-1].end == path.stat().st_size
    data = path.read_bytes()
    for before, after in itertools.pairwise(ranges):
        assert before.end == after.start and data[before.end - 1 : before.end] == b"\n"
        assert after.first_line == 1 + data[: after.start].count(b"\n")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"messages": []}',  # one object on one line
        b'[\n  {"messages": []}\n]\n',  # a pretty-printed document
        json.dumps([canonical_record()]).encode("utf-16"),  # not UTF-8
    ],
)
def test_other_files_have_no_line_ranges(tmp_path, content):
    path = tmp_path / "in.json"
    path.write_bytes(content)
    assert json_lines_ranges(path) is None


def test_line_ranges_of_a_missing_file_raise_unreadable_input(tmp_path):
    with pytest.raises(UnreadableInput, match="no such file"):
        json_lines_ranges(tmp_path / "gone.jsonl")
