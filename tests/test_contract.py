"""The pydantic contract: each rule quarantines with a {rule, path, value} report."""

from __future__ import annotations

import orjson
import pytest

from enrichment_assets.contract import (
    Conversation,
    Rejection,
    canonical_role,
    is_valid,
    validate_records,
)
from tests.factories import conversation, message


def validate_one(record: dict) -> Conversation | Rejection:
    (result,) = validate_records([orjson.dumps(record)])
    return result


def rules_of(record: dict) -> list[tuple[str, str]]:
    result = validate_one(record)
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    return [(issue.rule, issue.path) for issue in result.issues]


def test_accepts_a_canonical_conversation() -> None:
    result = validate_one(conversation())
    assert is_valid(result)
    assert [m["role"] for m in result["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]


def test_accepts_turns_as_alias_of_messages() -> None:
    record = conversation()
    record["turns"] = record.pop("messages")
    assert is_valid(validate_one(record))


def test_accepts_role_aliases_and_names_their_canonical_role() -> None:
    record = conversation(messages=[message(" Human", "hi"), message("GPT", "hello")])
    result = validate_one(record)
    assert is_valid(result)
    assert [canonical_role(m["role"]) for m in result["messages"]] == ["user", "assistant"]


def test_quarantines_record_without_assistant_turn() -> None:
    record = conversation(messages=[message("user", "anyone there?")])
    assert rules_of(record) == [("missing_assistant_message", "$.messages")]


def test_quarantines_record_without_user_turn() -> None:
    record = conversation(messages=[message("assistant", "hello")])
    assert rules_of(record) == [("missing_user_message", "$.messages")]


def test_quarantines_unknown_role_with_its_path_and_value() -> None:
    record = conversation(messages=[message("user", "hi"), message("narrator", "meanwhile")])
    result = validate_one(record)
    assert isinstance(result, Rejection)
    (issue,) = result.issues
    assert (issue.rule, issue.path, issue.value) == (
        "unknown_role",
        "$.messages[1].role",
        "narrator",
    )


@pytest.mark.parametrize("content", ["", "   \n\t"])
def test_quarantines_empty_content(content: str) -> None:
    record = conversation(messages=[message("user", content), message("assistant", "ok")])
    assert rules_of(record) == [("empty_content", "$.messages[0].content")]


def test_quarantines_malformed_conversation_id() -> None:
    assert rules_of(conversation(conversation_id="conv-123")) == [
        ("invalid_uuid", "$.conversation_id")
    ]


def test_quarantines_tier_outside_its_set() -> None:
    assert rules_of(conversation(tier="gold")) == [("not_in_allowed_set", "$.tier")]


def test_quarantines_unparseable_message_timestamp() -> None:
    record = conversation(
        messages=[message("user", "hi", timestamp="yesterday"), message("assistant", "hello")]
    )
    assert rules_of(record) == [("unparseable_timestamp", "$.messages[0].timestamp")]


def test_quarantines_unparseable_created_at() -> None:
    assert rules_of(conversation(created_at="the other day")) == [
        ("unparseable_timestamp", "$.created_at")
    ]


def test_quarantines_empty_user_id() -> None:
    assert rules_of(conversation(user_id="")) == [("empty_user_id", "$.user_id")]


def test_quarantines_record_without_messages() -> None:
    record = conversation()
    del record["messages"]
    assert rules_of(record) == [("missing_field", "$.messages")]


def test_quarantines_non_string_content() -> None:
    record = conversation(messages=[message("user", 42), message("assistant", "ok")])
    assert rules_of(record) == [("not_a_string", "$.messages[0].content")]


def test_reports_every_broken_rule_of_a_record() -> None:
    record = conversation(conversation_id="x", tier="gold", messages=[message("bot", "")])
    assert {rule for rule, _ in rules_of(record)} == {
        "invalid_uuid",
        "not_in_allowed_set",
        "empty_content",
    }


def test_parses_timestamps_without_offset() -> None:
    result = validate_one(conversation(created_at="2024-06-01T10:00:00"))
    assert is_valid(result)
    assert result["created_at"].isoformat() == "2024-06-01T10:00:00"


def test_unknown_reference_ids_are_not_a_validation_failure() -> None:
    result = validate_one(conversation(persona_id="persona-nobody-knows"))
    assert is_valid(result)


def test_validates_a_chunk_in_order_keeping_each_outcome_in_place() -> None:
    records = [conversation(), conversation(tier="gold"), conversation()]
    results = validate_records([orjson.dumps(r) for r in records])
    assert [is_valid(r) for r in results] == [True, False, True]
