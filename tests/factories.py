"""Small factories for test inputs: canonical conversations and the files holding them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson

_counter = iter(range(10**9))


def message(role: str = "user", content: str = "Hello there, how are you?", **extra: Any) -> dict:
    return {"role": role, "content": content, **extra}


def conversation(**overrides: Any) -> dict:
    """A valid canonical conversation; override any field to break it."""
    n = next(_counter)
    record = {
        "conversation_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"test-conversation-{n}")),
        "user_id": f"user-{n % 7:04d}",
        "template_id": "tmpl-support-basic",
        "persona_id": "persona-anxious-student",
        "emotional_arc_id": "arc-frustration-to-relief",
        "training_topic_id": "topic-password-reset",
        "tier": "template",
        "created_at": "2024-06-01T10:00:00Z",
        "messages": [
            message("system", "You are a helpful support assistant."),
            message(
                "user",
                "I cannot reset my password, the link gives an error.",
                timestamp="2024-06-01T10:00:00Z",
            ),
            message(
                "assistant",
                "Sorry about that! Let us fix it: open the reset page again.",
                timestamp="2024-06-01T10:00:30Z",
            ),
            message("user", "That worked, thank you so much!", timestamp="2024-06-01T10:01:10Z"),
            message("assistant", "Great, glad it is solved.", timestamp="2024-06-01T10:01:20Z"),
        ],
    }
    record.update(overrides)
    return record


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else orjson.dumps(r).decode() for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
