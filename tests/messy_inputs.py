"""A folder of messy input files, as they come in the wild, and what each should become.

`write_messy_folder` writes 23 small files (BOMs, UTF-16/32, CRLF, arrays, truncated
JSON, NaN, lone surrogates, odd timestamps, a 2 MB message, an empty file, binary
garbage, a stray Latin-1 byte, a raw NUL, deep nesting, ...) and returns the ids of
the records that must complete and the rule each rejected record must be
quarantined under.
"""

from __future__ import annotations

import codecs
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.factories import conversation, message


@dataclass
class MessyFolder:
    """What the folder holds: ids that must complete, rules rejected records get."""

    folder: Path
    completed_ids: set[str] = field(default_factory=set)
    # (file name, 1-based position or 0 for the file) -> rule of the quarantine report
    rejected: dict[tuple[str, int], str] = field(default_factory=dict)
    unreadable_files: list[str] = field(default_factory=list)
    # Records that complete with an id derived from their content (OpenAI, ShareGPT).
    completed_without_id: int = 0


def _line(record: Any) -> bytes:
    return orjson.dumps(record)


def _valid(messy: MessyFolder, **overrides: Any) -> dict[str, Any]:
    record = conversation(**overrides)
    messy.completed_ids.add(record["conversation_id"])
    return record


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth - 1):
        value = [value]
    return value


def write_messy_folder(folder: Path) -> MessyFolder:
    """Write the 23 files; every expectation of them is in the returned `MessyFolder`."""
    folder.mkdir(parents=True, exist_ok=True)
    messy = MessyFolder(folder)
    v = lambda **o: _valid(messy, **o)  # noqa: E731  (short, used a lot below)

    def jsonl(name: str, lines: list[bytes], prefix: bytes = b"", end: bytes = b"\n") -> None:
        (folder / name).write_bytes(prefix + end.join(lines) + end)

    jsonl("01-plain.jsonl", [_line(v()) for _ in range(3)])
    jsonl("02-utf8-bom.jsonl", [_line(v()) for _ in range(2)], prefix=codecs.BOM_UTF8)
    text = "".join(orjson.dumps(v()).decode() + "\n" for _ in range(2))
    (folder / "03-utf16-le-bom.jsonl").write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    array = orjson.dumps([v(), v()]).decode()
    (folder / "04-utf16-be-no-bom.json").write_bytes(array.encode("utf-16-be"))
    text = orjson.dumps(v()).decode() + "\n"
    (folder / "05-utf32-le-bom.jsonl").write_bytes(codecs.BOM_UTF32_LE + text.encode("utf-32-le"))
    jsonl("06-crlf.jsonl", [_line(v()) for _ in range(2)], end=b"\r\n")
    pretty = orjson.dumps([v(), v(), v()], option=orjson.OPT_INDENT_2)
    (folder / "07-pretty-array.json").write_bytes(pretty)
    (folder / "08-one-object.json").write_bytes(orjson.dumps(v(), option=orjson.OPT_INDENT_2))

    truncated = _line(conversation())[:60]
    jsonl("09-truncated.jsonl", [_line(v()), truncated], end=b"\n")
    messy.rejected[("09-truncated.jsonl", 2)] = "invalid_json"

    nan = _line(conversation()).replace(b'"tier":"template"', b'"tier":NaN')
    jsonl("10-nan.jsonl", [nan, _line(v())])
    messy.rejected[("10-nan.jsonl", 1)] = "invalid_json"

    # A JSON escape of half a surrogate pair: no character at all.
    surrogate = _line(conversation(messages=[message("user", "LONE"), message("assistant")]))
    surrogate = surrogate.replace(b"LONE", b"\\ud800 alone")
    jsonl("11-lone-surrogate.jsonl", [_line(v()), surrogate])
    messy.rejected[("11-lone-surrogate.jsonl", 2)] = "invalid_json"

    odd = [
        v(created_at="2024-06-01 10:00:00"),  # a space for the T: ISO-8601 enough
        v(created_at="2024-06-01T10:00:00+05:30"),
        conversation(created_at="yesterday at noon"),
        conversation(created_at="2024-13-45T99:00:00Z"),
    ]
    jsonl("12-odd-timestamps.jsonl", [_line(r) for r in odd])
    messy.rejected[("12-odd-timestamps.jsonl", 3)] = "unparseable_timestamp"
    messy.rejected[("12-odd-timestamps.jsonl", 4)] = "unparseable_timestamp"

    big = v(messages=[message("user", "word " * 400_000), message("assistant", "ok, read it")])
    jsonl("13-two-megabyte-message.jsonl", [_line(big)])

    (folder / "14-empty.json").write_bytes(b"")
    messy.rejected[("14-empty.json", 0)] = "empty_file"
    messy.unreadable_files.append("14-empty.json")
    (folder / "15-garbage.bin").write_bytes(random.Random(15).randbytes(4096))
    messy.rejected[("15-garbage.bin", 0)] = "binary_file"
    messy.unreadable_files.append("15-garbage.bin")

    latin1 = _line(v(messages=[message("user", "caf\u00e9 au lait?"), message("assistant")]))
    latin1 = latin1.replace("é".encode(), b"\xe9")
    jsonl("16-stray-latin1-byte.jsonl", [_line(v()), latin1, _line(v())])

    nul = _line(conversation()).replace(b"Hello", b"Hel\x00lo").replace(b"cannot", b"can\x00not")
    jsonl("17-raw-nul.jsonl", [_line(v()), nul, _line(v())])
    messy.rejected[("17-raw-nul.jsonl", 2)] = "forbidden_bytes"

    deep = {**conversation(), "extra": _deep(210)}
    jsonl("18-deep-nesting.jsonl", [_line(v()), _line(deep), _line(v()), _line(v())])
    messy.rejected[("18-deep-nesting.jsonl", 2)] = "nesting_too_deep"

    openai = {"messages": [message("user", "Hi from OpenAI"), message("assistant", "Hello!")]}
    jsonl("19-openai.jsonl", [_line(openai), _line([1, 2])])
    messy.rejected[("19-openai.jsonl", 2)] = "not_an_object"
    turns = [{"from": "human", "value": "hey there"}, {"from": "gpt", "value": "hello!"}]
    (folder / "20-sharegpt.json").write_bytes(orjson.dumps([{"conversations": turns}]))
    messy.completed_without_id += 2

    jsonl("21-blank-lines.jsonl", [b"", _line(v()), b"   ", b"", _line(v()), b""])
    invalid = [
        conversation(messages=[message("user", "only a question")]),
        conversation(conversation_id="not-a-uuid"),
        conversation(messages=[message("wizard", "abracadabra"), message("assistant")]),
    ]
    jsonl("22-contract-failures.jsonl", [_line(r) for r in invalid])
    messy.rejected[("22-contract-failures.jsonl", 1)] = "missing_assistant_message"
    messy.rejected[("22-contract-failures.jsonl", 2)] = "invalid_uuid"
    messy.rejected[("22-contract-failures.jsonl", 3)] = "unknown_role"

    (folder / "23-notes.txt").write_text("user,message\nalice,hi there\n")
    messy.rejected[("23-notes.txt", 0)] = "not_json_text"
    messy.unreadable_files.append("23-notes.txt")
    return messy
