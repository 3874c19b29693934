"""Conversation formats: one parsed JSON value -> the canonical shape.

Recognized formats (by keys, not by file name):
- `canonical`: an object with `messages` or `turns` and at least one canonical
  field besides them (or `turns`, the canonical alias);
- `openai`: `{"messages": [{"role", "content"}, ...]}` and no other canonical field;
- `sharegpt`: `{"conversations": [{"from", "value"}, ...], "id"?}`;
- `unknown`: any other object (kept as is) or a non-object value (no record).

Nothing is validated or fixed here (that is the validation layer's job): values
pass through verbatim. The only changes are structural: `turns` -> `messages`,
ShareGPT turns -> `{role, content}`, OpenAI content parts -> one string. A mapped
record always has every canonical key (None when absent) and only those: other
top-level keys are left out (`raw_text` keeps them); message-level keys pass through.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any, Final

import orjson

from enrichment_assets.contract import CANONICAL_KEYS

# Namespace of derived conversation ids. Never change it: re-ingesting the same
# content must give the same id, across releases.
CONVERSATION_ID_NAMESPACE: Final = uuid.UUID("6f1c7a52-3d0e-5b8a-9c47-2e5d8b91f0a3")
_NAMESPACE_BYTES: Final = CONVERSATION_ID_NAMESPACE.bytes

_CANONICAL_FIELDS_BESIDES_MESSAGES: Final = frozenset(CANONICAL_KEYS) - {"messages"}

# ShareGPT speaker names -> canonical roles (looked up lower-cased); others stay verbatim.
SHAREGPT_ROLES: Final = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
}

# OpenAI content-part types that carry text (Chat Completions and Responses API).
_TEXT_PART_TYPES: Final = frozenset({"text", "input_text", "output_text"})

_JSON_TYPE_NAMES: Final = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


@dataclass(frozen=True, slots=True)
class MappedRecord:
    """One parsed value, mapped: the columns of a raw row that depend on the record."""

    source_format: str  # canonical | openai | sharegpt | unknown
    record_json: bytes | None  # the canonical-shape record, orjson-serialized (UTF-8)
    conversation_id: str
    error: str | None  # why the value is not a record, else None


def map_record(value: Any) -> MappedRecord:
    """Map one parsed JSON value onto the canonical shape."""
    if not isinstance(value, dict):
        kind = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
        return MappedRecord(
            "unknown",
            None,
            derive_conversation_id(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)),
            f"record is a JSON {kind}, expected an object",
        )
    source_format, record = _to_canonical(value)
    conversation_id = record.get("conversation_id")
    if conversation_id is None:
        # Hash the record without its id, keys sorted: whitespace and key order in
        # the file do not change the id.
        content = {key: item for key, item in record.items() if key != "conversation_id"}
        conversation_id = derive_conversation_id(orjson.dumps(content, option=orjson.OPT_SORT_KEYS))
        record["conversation_id"] = conversation_id
    return MappedRecord(
        source_format,
        orjson.dumps(record),
        # Kept verbatim even when malformed (validation reports it); str() of non-strings.
        conversation_id if isinstance(conversation_id, str) else str(conversation_id),
        None,
    )


def derive_conversation_id(content: bytes | str) -> str:
    """The deterministic id of a record that has none: uuid5(namespace, content).

    Same value as `str(uuid.uuid5(CONVERSATION_ID_NAMESPACE, content))`, computed on
    the UTF-8 bytes directly: this runs once per record on the ingest hot path.
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    return uuid5_from_digest(hashlib.sha1(_NAMESPACE_BYTES + data, usedforsecurity=False).digest())


def uuid5_from_digest(sha1_digest: bytes) -> str:
    """The uuid5 whose sha1 (of namespace + content) is `sha1_digest`: for content hashed
    in pieces, such as a line too long to hold."""
    digest = bytearray(sha1_digest)
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    hex_ = digest[:16].hex()
    return f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


def _to_canonical(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if "messages" in obj or "turns" in obj:
        has_canonical_field = "turns" in obj or not _CANONICAL_FIELDS_BESIDES_MESSAGES.isdisjoint(
            obj
        )
        record = {key: obj.get(key) for key in CANONICAL_KEYS}
        record["messages"] = _openai_messages(
            obj["messages"] if "messages" in obj else obj["turns"]
        )
        return ("canonical" if has_canonical_field else "openai"), record
    if "conversations" in obj:
        record = {key: obj.get(key) for key in CANONICAL_KEYS}
        if record["conversation_id"] is None and _is_uuid(obj.get("id")):
            record["conversation_id"] = obj["id"]
        record["messages"] = _sharegpt_messages(obj["conversations"])
        return "sharegpt", record
    return "unknown", dict(obj)


# Non-list messages and non-dict messages pass through verbatim, for validation to report.


def _openai_messages(messages: Any) -> Any:
    if not isinstance(messages, list):
        return messages
    # The type checks are inline: this runs for every message of every record.
    return [
        _with_joined_parts(message)
        if type(message) is dict and type(message.get("content")) is list
        else message
        for message in messages
    ]


def _sharegpt_messages(turns: Any) -> Any:
    if not isinstance(turns, list):
        return turns
    return [_sharegpt_message(turn) if isinstance(turn, dict) else turn for turn in turns]


def _with_joined_parts(message: dict[str, Any]) -> dict[str, Any]:
    text = _join_text_parts(message["content"])
    return message if text is None else {**message, "content": text}


def _sharegpt_message(turn: dict[str, Any]) -> dict[str, Any]:
    speaker = turn["from"] if "from" in turn else turn.get("role")
    message = {
        "role": SHAREGPT_ROLES.get(speaker.lower(), speaker)
        if isinstance(speaker, str)
        else speaker,
        "content": turn["value"] if "value" in turn else turn.get("content"),
    }
    # Other keys of the turn (a timestamp, a weight) pass through.
    message.update(
        (key, item) for key, item in turn.items() if key not in ("from", "value", "role", "content")
    )
    return _with_joined_parts(message) if isinstance(message["content"], list) else message


def _join_text_parts(parts: list[Any]) -> str | None:
    """The text of OpenAI content parts joined by newlines; None if `parts` is not that."""
    if not parts or not all(isinstance(part, dict) for part in parts):
        return None
    texts = [
        part["text"]
        for part in parts
        if part.get("type") in _TEXT_PART_TYPES and isinstance(part.get("text"), str)
    ]
    # Parts without any text (images only) stay verbatim, for validation to report.
    return "\n".join(texts) if texts else None


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
