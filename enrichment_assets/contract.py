"""The data contract of a conversation, as pydantic v2 models.

`Conversation` is what the validated layer accepts; everything that fails it is
quarantined with a machine-readable report: a list of `ValidationIssue`
(`{rule, path, value}`). Whole chunks are validated in one call
(`CONVERSATIONS.validate_json`) and each record's failure is captured in place,
so one bad record never costs a second pass over the chunk.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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

# How much of an offending value a validation report carries.
MAX_REPORTED_VALUE_CHARS = 200


def _canonical_role(value: Any) -> Any:
    if isinstance(value, str):
        role = ROLE_ALIASES.get(value.strip().lower())
        if role is None:
            raise PydanticCustomError(
                "unknown_role",
                "role {role!r} is not one of system, user, assistant (or a known alias)",
                {"role": value},
            )
        return role
    return value


def _non_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("empty_content", "content is empty or only whitespace")
    return value


def _as_utc(value: datetime) -> datetime:
    # A timestamp without an offset is taken as UTC: that is what the replaced systems wrote.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _user_id(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("empty_user_id", "user_id is an empty string")
    return value


UtcTimestamp = Annotated[datetime, AfterValidator(_as_utc)]


class Message(BaseModel):
    """One turn of a conversation."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Annotated[Role, BeforeValidator(_canonical_role)]
    content: Annotated[str, AfterValidator(_non_blank)]
    timestamp: UtcTimestamp | None = None


class Conversation(BaseModel):
    """A conversation that satisfies the contract of SPEC.md."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    conversation_id: UUID
    user_id: Annotated[str, AfterValidator(_user_id)] | None = None
    template_id: str | None = None
    persona_id: str | None = None
    emotional_arc_id: str | None = None
    training_topic_id: str | None = None
    tier: Tier | None = None
    created_at: UtcTimestamp | None = None
    messages: list[Message] = Field(validation_alias=AliasChoices("messages", "turns"))

    @model_validator(mode="after")
    def _has_user_and_assistant(self) -> Conversation:
        roles = {m.role for m in self.messages}
        for needed in ("user", "assistant"):
            if needed not in roles:
                raise PydanticCustomError(
                    f"missing_{needed}_message",
                    "a conversation needs at least one user and one assistant message",
                )
        return self


class ValidationIssue(BaseModel):
    """One broken rule of one record: which rule, where (JSON path), what value."""

    rule: str
    path: str
    value: Any = None


class Rejection(BaseModel):
    """A record that failed the contract, with every issue found."""

    issues: list[ValidationIssue]


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
        loc = tuple(p for p in err["loc"] if p not in ("str", "function-after[_user_id(), str]"))
        value = None if err["type"] in ("missing", "model_type") else err.get("input")
        if err["type"] == "missing_user_message" or err["type"] == "missing_assistant_message":
            loc, value = ("messages",), None
        rule = RULE_NAMES.get(err["type"], err["type"])
        issues.append(ValidationIssue(rule=rule, path=_json_path(loc), value=_reportable(value)))
    return issues


def _capture_rejection(value: Any, handler: Any) -> Conversation | Rejection:
    try:
        return handler(value)
    except ValidationError as error:
        return Rejection(issues=issues_from(error))


# One call validates a whole chunk; each element comes back as a Conversation or a Rejection.
CONVERSATIONS: TypeAdapter[list[Conversation | Rejection]] = TypeAdapter(
    list[Annotated[Conversation, WrapValidator(_capture_rejection)]]
)


def validate_records(record_jsons: list[bytes]) -> list[Conversation | Rejection]:
    """Validate a chunk of JSON-encoded records in one pass, in order."""
    return CONVERSATIONS.validate_json(b"[" + b",".join(record_jsons) + b"]")
