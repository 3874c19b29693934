"""Limits on one record: policy, checked the same way by every reader of the raw layer.

A record past a limit is a raw row of its own with the limit's rule (`parse_rule`)
and a one-line `parse_error`, quarantined by the validated layer like any record
that breaks the contract: it never fails a step or a chunk, and its neighbours go on.

- `record_too_large`: bytes of one record (a line, an array element);
  `ENRICH_MAX_RECORD_BYTES`, default 16 MiB;
- `nesting_too_deep`: nesting depth of one record (the record itself is 1);
  `ENRICH_MAX_NESTING_DEPTH`, default 64;
- `too_many_messages`: messages in one conversation; `ENRICH_MAX_MESSAGES`, default 10,000;
- `message_too_long`: characters in one message's content; `ENRICH_MAX_MESSAGE_CHARS`,
  default 4,000,000 (about a million tokens: more than any model reads at once).

Each is also a field of the `lake` resource (0 there = the variable, or the default).
A record over the size limit is measured while it streams by and never held whole.
The depth can be at most 190: the validated layer parses a chunk of records as one
JSON array, and its parser stops at depth 200.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from enrichment_assets import settings as env_settings

RECORD_TOO_LARGE = "record_too_large"
NESTING_TOO_DEEP = "nesting_too_deep"
TOO_MANY_MESSAGES = "too_many_messages"
MESSAGE_TOO_LONG = "message_too_long"
LIMIT_RULES = (RECORD_TOO_LARGE, NESTING_TOO_DEEP, TOO_MANY_MESSAGES, MESSAGE_TOO_LONG)

MAX_NESTING_DEPTH_CEILING = 190


@dataclass(frozen=True)
class RecordLimits:
    """The four limits on one record (see the module docstring)."""

    max_record_bytes: int = 16 * 1024 * 1024
    max_nesting_depth: int = 64
    max_messages: int = 10_000
    max_message_chars: int = 4_000_000

    def __post_init__(self) -> None:
        if not 1 <= self.max_nesting_depth <= MAX_NESTING_DEPTH_CEILING:
            raise ValueError(
                f"max_nesting_depth={self.max_nesting_depth}: expected 1 to "
                f"{MAX_NESTING_DEPTH_CEILING}"
            )
        for name in ("max_record_bytes", "max_messages", "max_message_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected at least 1")

    @classmethod
    def from_env(
        cls,
        *,
        max_record_bytes: int = 0,
        max_nesting_depth: int = 0,
        max_messages: int = 0,
        max_message_chars: int = 0,
    ) -> RecordLimits:
        """The limits given (non-zero), else from the environment, else the defaults."""
        return cls(
            max_record_bytes=max_record_bytes
            or env_settings.whole_number("ENRICH_MAX_RECORD_BYTES", cls.max_record_bytes),
            max_nesting_depth=max_nesting_depth
            or env_settings.whole_number("ENRICH_MAX_NESTING_DEPTH", cls.max_nesting_depth),
            max_messages=max_messages
            or env_settings.whole_number("ENRICH_MAX_MESSAGES", cls.max_messages),
            max_message_chars=max_message_chars
            or env_settings.whole_number("ENRICH_MAX_MESSAGE_CHARS", cls.max_message_chars),
        )

    def too_large(self, size: int) -> str:
        return f"record of {size} bytes is over the limit of {self.max_record_bytes} bytes"

    def violation(self, data: bytes, value: Any) -> tuple[str, str] | None:
        """(rule, reason) of the first limit the parsed record breaks, else None.

        `data` is the record's text: its size bounds what the walks below could find,
        so a typical record costs two `bytes.count` calls and a length, nothing more.
        """
        if len(data) > self.max_record_bytes:
            return RECORD_TOO_LARGE, self.too_large(len(data))
        # A value cannot nest deeper than it has brackets: only a record with many is walked.
        if data.count(b"{") + data.count(b"[") > self.max_nesting_depth:
            depth = nesting_depth(value, self.max_nesting_depth + 1)
            if depth > self.max_nesting_depth:
                return NESTING_TOO_DEEP, (
                    f"nested more than {self.max_nesting_depth} levels deep "
                    f"(the limit is {self.max_nesting_depth})"
                )
        messages = _messages_of(value)
        if messages is None:
            return None
        if len(messages) > self.max_messages:
            return TOO_MANY_MESSAGES, (
                f"{len(messages)} messages, over the limit of {self.max_messages}"
            )
        # A message cannot have more characters than the record has bytes.
        if len(data) > self.max_message_chars:
            for index, message in enumerate(messages):
                chars = _content_chars(message)
                if chars > self.max_message_chars:
                    return MESSAGE_TOO_LONG, (
                        f"message {index} has {chars} characters, over the limit of "
                        f"{self.max_message_chars}"
                    )
        return None


def nesting_depth(value: Any, stop_at: int) -> int:
    """How deep `value` nests (a scalar 0, `{}` 1, `[[]]` 2), counted up to `stop_at`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest >= stop_at:
            return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _messages_of(value: Any) -> list[Any] | None:
    """The message list of a record in any accepted format, if it has one."""
    if not isinstance(value, dict):
        return None
    for key in ("messages", "turns", "conversations"):
        messages = value.get(key)
        if isinstance(messages, list):
            return messages
    return None


def _content_chars(message: Any) -> int:
    if not isinstance(message, dict):
        return 0
    content = message.get("content", message.get("value"))
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # OpenAI content parts: their texts are joined
        return sum(
            len(part["text"])
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0
