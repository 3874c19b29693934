"""The data contract of a conversation, as pydantic v2 models.

`Conversation` is what the validated layer accepts; everything that fails it is
quarantined with a machine-readable report: a list of `ValidationIssue`
(`{rule, path, value}`). Whole chunks are validated in one call
(`CONVERSATIONS.validate_json`) and each record's failure is captured in place,
so one bad record never costs a second pass over the chunk. The rules are
declared so that pydantic-core checks them in Rust (patterns, literals, UUIDs,
datetimes); Python runs once per conversation, never once per message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WrapValidator,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

# The fields of a canonical record, in the contract's order (ingest maps every format onto them).
CANONICAL_KEYS: tuple[str, ...] = (
    "conversation_id",
    "user_id",
    "template_id",
    "persona_id",
    "emotional_arc_id",
    "training_topic_id",
    "tier",
    "created_at",
    "messages",
)

Tier = Literal["template", "scenario", "edge_case"]
Role = Literal["system", "user", "assistant"]

STATUSES: tuple[str, ...] = (
    "not_started",
    "validated",
    "enrichment_in_progress",
    "enriched",
    "completed",
    "validation_failed",
    "normalization_failed",
    # Set aside by the identity index (`identity.py`), never pending work: an exact repeat,
    # another conversation under an id already used in its batch, an older version.
    "duplicate",
    "id_conflict",
    "superseded",
)

# Role names seen in the wild, mapped onto the canonical set (case-insensitive).
ROLE_ALIASES: dict[str, Role] = {
    "system": "system",
    "user": "user",
    "human": "user",
    "customer": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "ai": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
}
# The same set as a pattern, so pydantic-core checks it in Rust, not in Python per message.
ROLE_PATTERN = r"(?i)^\s*(?:" + "|".join(ROLE_ALIASES) + r")\s*$"

# How much of an offending value a validation report carries.
MAX_REPORTED_VALUE_CHARS = 200


def canonical_role(role: str) -> Role:
    """The canonical role of a role name that passed ROLE_PATTERN."""
    return ROLE_ALIASES[role.strip().lower()]


class Message(TypedDict):
    """One turn of a conversation.

    `role`: system | user | assistant, or a known alias (ROLE_ALIASES), any case;
    `content`: a string with at least one non-whitespace character;
    `timestamp`: ISO-8601; without an offset it is taken as UTC.
    """

    role: Annotated[str, Field(pattern=ROLE_PATTERN)]
    content: Annotated[str, Field(pattern=r"\S")]
    timestamp: NotRequired[datetime | None]


def _has_user_and_assistant(conversation: Conversation) -> Conversation:
    roles = {canonical_role(m["role"]) for m in conversation["messages"]}
    for needed in ("user", "assistant"):
        if needed not in roles:
            raise PydanticCustomError(
                f"missing_{needed}_message",
                "a conversation needs at least one user and one assistant message",
            )
    return conversation


@with_config(ConfigDict(extra="ignore"))
class Conversation(TypedDict):
    """A conversation that satisfies the input contract: the fields and rules of this module.

    Validated into plain dicts (no model instances): a chunk of 20,000
    conversations validates in about a second.
    """

    conversation_id: UUID
    user_id: NotRequired[Annotated[str, Field(min_length=1)] | None]
    template_id: NotRequired[str | None]
    persona_id: NotRequired[str | None]
    emotional_arc_id: NotRequired[str | None]
    training_topic_id: NotRequired[str | None]
    tier: NotRequired[Tier | None]
    created_at: NotRequired[datetime | None]
    messages: Annotated[list[Message], Field(validation_alias=AliasChoices("messages", "turns"))]


ValidConversation = Annotated[Conversation, AfterValidator(_has_user_and_assistant)]


class ValidationIssue(BaseModel):
    """One broken rule of one record: which rule, where (JSON path), what value."""

    rule: str
    path: str
    value: Any = None


class Rejection(BaseModel):
    """A record that failed the contract, with every issue found."""

    issues: list[ValidationIssue]


def is_valid(result: Conversation | Rejection) -> bool:
    return not isinstance(result, Rejection)


# Pydantic's error types, renamed to the rule names of our reports where they read poorly.
RULE_NAMES: dict[str, str] = {
    "uuid_parsing": "invalid_uuid",
    "uuid_type": "invalid_uuid",
    "literal_error": "not_in_allowed_set",
    "missing": "missing_field",
    "string_type": "not_a_string",
    "list_type": "not_a_list",
    "model_type": "not_an_object",
    "model_attributes_type": "not_an_object",
    "datetime_from_date_parsing": "unparseable_timestamp",
    "datetime_parsing": "unparseable_timestamp",
    "datetime_type": "unparseable_timestamp",
}
# Constraint errors named after the field they break.
FIELD_RULE_NAMES: dict[tuple[str, str], str] = {
    ("string_pattern_mismatch", "role"): "unknown_role",
    ("string_pattern_mismatch", "content"): "empty_content",
    ("string_too_short", "user_id"): "empty_user_id",
}


def _json_path(loc: tuple[int | str, ...]) -> str:
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _reportable(value: Any) -> Any:
    if isinstance(value, dict | list):
        text = orjson.dumps(value).decode()
        return text if len(text) <= MAX_REPORTED_VALUE_CHARS else text[:MAX_REPORTED_VALUE_CHARS]
    if isinstance(value, str) and len(value) > MAX_REPORTED_VALUE_CHARS:
        return value[:MAX_REPORTED_VALUE_CHARS]
    return value


def issues_from(error: ValidationError) -> list[ValidationIssue]:
    """Turn pydantic's errors into the `{rule, path, value}` report of the contract."""
    issues = []
    for err in error.errors(include_url=False):
        # Union members report under their type name (e.g. "str"); drop that noise from paths.
        loc = tuple(p for p in err["loc"] if p not in ("str", "constrained-str"))
        value = None if err["type"] in ("missing", "model_type") else err.get("input")
        if err["type"] in ("missing_user_message", "missing_assistant_message"):
            loc, value = ("messages",), None
        field = str(loc[-1]) if loc else ""
        rule = FIELD_RULE_NAMES.get((err["type"], field)) or RULE_NAMES.get(
            err["type"], err["type"]
        )
        issues.append(ValidationIssue(rule=rule, path=_json_path(loc), value=_reportable(value)))
    return issues


def _capture_rejection(value: Any, handler: Any) -> Conversation | Rejection:
    """Turn a record's failure into a Rejection in place, so the chunk validates on."""
    try:
        return handler(value)
    except ValidationError as error:
        return Rejection(issues=issues_from(error))


# One call validates a whole chunk; each element comes back as a Conversation or a Rejection.
CONVERSATIONS: TypeAdapter[list[Conversation | Rejection]] = TypeAdapter(
    list[Annotated[ValidConversation, WrapValidator(_capture_rejection)]]
)


def validate_records(record_jsons: list[bytes]) -> list[Conversation | Rejection]:
    """Validate a chunk of JSON-encoded records in one pass, in order."""
    return CONVERSATIONS.validate_json(b"[" + b",".join(record_jsons) + b"]")
