"""What the openai enricher asks for and accepts: the annotation model, the prompt,
validation of answers (envelope, content, usage), one-line errors and the accounting
of a call.

Validation is strict: an answer is accepted as the model gave it or refused with
the reason, never coerced (`true` or `"0.9"` are not a confidence), clamped (a
sentiment of -3 is not -1) or cut (a 100,000-character summary is not a summary).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    SecretStr,
    ValidationError,
    field_validator,
)

from enrichment_assets.enrichers.base import EMOTIONAL_TONES, LABELS

# Bump when SYSTEM_PROMPT or the annotation model changes meaning: it is part of
# every cache key and of every output row.
PROMPT_VERSION = "annotate-v1"


# Field caps, checked on every answer (and not part of the JSON schema sent, so adding
# them left every cache key as it was). The label and the tone are capped by their enums.
MAX_SUMMARY_CHARS = 2_000  # ~500 tokens: more than the completion budget allows honestly
MAX_TOPIC_CHARS = 100


class ConversationAnnotation(BaseModel):
    """What the model must answer for one conversation (sent as a strict JSON schema)."""

    # strict: a bool or a string is not a number; allow_inf_nan: NaN is not in [0, 1].
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    summary: str = Field(description="One to three sentences on what the user wanted and got.")
    topics: list[str] = Field(max_length=8, description="One to five short key topics.")
    emotional_tone: Literal[EMOTIONAL_TONES] = Field(description="The user's overall tone.")
    sentiment: float = Field(ge=-1.0, le=1.0, description="-1 very negative .. 1 very positive.")
    label: Literal[LABELS] = Field(description="The kind of task the conversation is.")
    confidence: float = Field(ge=0.0, le=1.0, description="Confidence in the label, 0..1.")
    quality_score: float = Field(
        ge=0.0, le=100.0, description="0..100: how good the assistant turns are as training data."
    )

    @field_validator("summary")
    @classmethod
    def _summary_not_blank(cls, value: str) -> str:
        if len(value) > MAX_SUMMARY_CHARS:
            raise ValueError(_over_cap("summary", len(value), MAX_SUMMARY_CHARS))
        if not value.strip():
            raise ValueError("summary is blank")
        return value.strip()

    @field_validator("topics")
    @classmethod
    def _topics_short(cls, value: list[str]) -> list[str]:
        for i, topic in enumerate(value):
            if len(topic) > MAX_TOPIC_CHARS:
                raise ValueError(_over_cap(f"topics.{i}", len(topic), MAX_TOPIC_CHARS))
        return value


def _over_cap(field: str, size: int, cap: int) -> str:
    return f"{field} is {size:,} characters, over the {cap:,}-character cap"


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema as OpenAI strict mode wants it: closed objects, all keys required."""

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            for child in node.values():
                close(child)
        elif isinstance(node, list):
            for child in node:
                close(child)

    schema = model.model_json_schema()
    close(schema)
    return schema


ANNOTATION_JSON_SCHEMA = strict_json_schema(ConversationAnnotation)

SYSTEM_PROMPT = f"""\
You annotate one conversation between a user and an assistant for a training-data pipeline.
Read the whole conversation, then answer with the annotation only:
- summary: one to three sentences on what the user wanted and what the assistant did;
- topics: one to five short, lowercase key topics;
- emotional_tone: the user's overall tone, one of {", ".join(EMOTIONAL_TONES)};
- sentiment: the user's sentiment from -1.0 (very negative) to 1.0 (very positive);
- label: the kind of task, one of {", ".join(LABELS)};
- confidence: your confidence in the label, from 0.0 to 1.0;
- quality_score: 0 to 100, how good the assistant's turns are as training data \
(correct, helpful, well written).
Never invent content that is not in the conversation."""

_JSON_MODE_SUFFIX = "\nAnswer with one JSON object that follows this JSON schema:\n"


def render_conversation(turns: list[tuple[str, str]], max_chars: int) -> str:
    """The conversation as compact `role: content` lines, cut in the middle past `max_chars`."""
    text = "\n".join(f"{role}: {' '.join(str(content).split())}" for role, content in turns)
    if len(text) <= max_chars:
        return text
    # Keep the opening (the request) and the end (the resolution); drop the middle.
    head = text[: max_chars * 2 // 3]
    tail = text[len(text) - (max_chars - len(head)) :]
    return f"{head}\n[... {len(text) - len(head) - len(tail)} characters omitted ...]\n{tail}"


def chat_messages(conversation_text: str, response_format: str) -> list[dict[str, str]]:
    system = SYSTEM_PROMPT
    if response_format == "json_object":  # no schema enforcement: describe it instead
        system += _JSON_MODE_SUFFIX + _compact_json(ANNOTATION_JSON_SCHEMA)
    return [{"role": "system", "content": system}, {"role": "user", "content": conversation_text}]


def _compact_json(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- outcomes, errors, accounting ---------------------------------------------------------
@dataclass
class AnnotationOutcome:
    """The result of annotating one distinct conversation: an annotation or an error."""

    annotation: ConversationAnnotation | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached: bool = False
    # Of prompt_tokens, those the provider served from its prompt cache (priced lower).
    provider_cached_tokens: int | None = None


_MAX_ERROR_CHARS = 300
# Scanned for secrets before the cut to _MAX_ERROR_CHARS: a bound on the work, not the output.
_MAX_SCANNED_CHARS = 4_000
_KEY_LIKE = re.compile(r"(sk-|Bearer\s+)[A-Za-z0-9_\-.]{6,}")
# A secret's fragments this long are scrubbed too (a server may echo part of a key).
_MIN_FRAGMENT_CHARS = 8


class SecretScrubber:
    """Replaces a secret in text by `***`: as is, escaped (JSON, repr, URL) or in part.

    Built once per enricher from the configured key, whatever its shape, and applied
    to every error text before it is stored, logged or shown.
    """

    def __init__(self, secret: SecretStr | str | None) -> None:
        value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret or ""
        self._pattern: re.Pattern[str] | None = None
        if not value:
            return
        from urllib.parse import quote

        forms = {value, orjson.dumps(value).decode()[1:-1], repr(value)[1:-1], quote(value)}
        # Every fragment of _MIN_FRAGMENT_CHARS: a partial echo is scrubbed where it starts.
        for form in list(forms):
            size = _MIN_FRAGMENT_CHARS
            forms.update(form[i : i + size] for i in range(len(form) - size + 1))
        longest_first = sorted((f for f in forms if f), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, longest_first)))

    def __call__(self, text: str) -> str:
        """`text` with every form of the secret replaced by `***`."""
        if self._pattern is None:
            return text
        return self._pattern.sub("***", text)

    def __repr__(self) -> str:  # never the secret, nor its fragments
        return "SecretScrubber(...)"


def one_line_error(text: str, api_key: SecretStr | SecretScrubber | None = None) -> str:
    """`text` fit for a row's `error`: one line, bounded, with no API key in it."""
    scrub = api_key if isinstance(api_key, SecretScrubber) else SecretScrubber(api_key)
    # Scrubbed before and after whitespace is folded (a key may hold spaces), and before
    # the cut: a key cut in half would not be recognized any more.
    text = scrub(text[:_MAX_SCANNED_CHARS])
    text = scrub(" ".join(text.split()))
    text = _KEY_LIKE.sub(r"\1***", text)
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def validate_annotation(data: Mapping[str, Any]) -> ConversationAnnotation | None:
    """`data` as an annotation (a cache entry), or None when it no longer validates."""
    try:
        return ConversationAnnotation.model_validate(data)
    except ValidationError:
        return None


class _Message(BaseModel):
    model_config = ConfigDict(strict=True)

    content: str | None = None
    refusal: str | None = None


class _Choice(BaseModel):
    model_config = ConfigDict(strict=True)

    message: _Message
    finish_reason: str | None = None


# Far above any context window; past it a count is garbage (and would overflow Int64).
_MAX_TOKENS = 1_000_000_000


class _PromptTokensDetails(BaseModel):
    model_config = ConfigDict(strict=True)

    cached_tokens: NonNegativeInt | None = Field(default=None, le=_MAX_TOKENS)


class _Usage(BaseModel):
    model_config = ConfigDict(strict=True)

    prompt_tokens: NonNegativeInt | None = Field(default=None, le=_MAX_TOKENS)
    completion_tokens: NonNegativeInt | None = Field(default=None, le=_MAX_TOKENS)
    prompt_tokens_details: _PromptTokensDetails | None = None


class ChatCompletionEnvelope(BaseModel):
    """The parts of a chat completion the enricher reads; any other key is ignored."""

    model_config = ConfigDict(strict=True)

    choices: list[_Choice] = Field(min_length=1)
    usage: _Usage | None = None


def _describe(exc: ValidationError, limit: int = 3) -> str:
    return "; ".join(
        f"{'.'.join(map(str, p['loc'])) or 'root'}"
        + (f"={str(p.get('input'))[:40]!s}" if p["type"] != "value_error" else "")
        + f": {p['msg'].removeprefix('Value error, ')}"
        for p in exc.errors(include_url=False)[:limit]
    )


def outcome_from_completion(completion: bytes | Mapping[str, Any]) -> AnnotationOutcome:
    """Validate a chat completion body (online answer or a line of a batch output file).

    Never raises: whatever is wrong with the answer (its JSON, its envelope, its usage,
    its content) is this conversation's error.
    """
    try:
        if isinstance(completion, bytes | bytearray | str):
            envelope = ChatCompletionEnvelope.model_validate_json(completion)
        else:
            envelope = ChatCompletionEnvelope.model_validate(completion)
    except ValidationError as exc:
        if any(p["type"] == "json_invalid" for p in exc.errors(include_url=False)):
            return AnnotationOutcome(error="the answer is not valid JSON")
        return AnnotationOutcome(error=f"malformed answer: {_describe(exc)}")
    choice, usage = envelope.choices[0], envelope.usage or _Usage()
    content, refusal = choice.message.content, choice.message.refusal
    finish_reason = choice.finish_reason
    prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
    details = usage.prompt_tokens_details
    provider_cached = details.cached_tokens if details is not None else None

    def failed(error: str) -> AnnotationOutcome:
        return AnnotationOutcome(
            error=one_line_error(error),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            provider_cached_tokens=provider_cached,
        )

    if refusal:
        return failed(f"model refused: {refusal}")
    if not content:
        return failed(f"empty response (finish_reason={finish_reason})")
    try:
        annotation = ConversationAnnotation.model_validate_json(content)
    except ValidationError as exc:
        if any(p["type"] == "json_invalid" for p in exc.errors(include_url=False)):
            return failed(f"response is not valid JSON (finish_reason={finish_reason})")
        return failed(f"response violates the annotation schema: {_describe(exc)}")
    return AnnotationOutcome(
        annotation=annotation,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        provider_cached_tokens=provider_cached,
    )


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens; `cached_input_per_1m` prices the prompt tokens the provider
    served from its prompt cache (`usage.prompt_tokens_details.cached_tokens`; None: the
    input price)."""

    input_per_1m: float
    output_per_1m: float
    cached_input_per_1m: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_price = (
            self.input_per_1m if self.cached_input_per_1m is None else self.cached_input_per_1m
        )
        return (
            (prompt_tokens - cached) * self.input_per_1m
            + cached * cached_price
            + completion_tokens * self.output_per_1m
        ) / 1e6


@dataclass
class EnrichmentStats:
    """What one `annotate` call did and cost; `as_metadata()` feeds the asset's metadata."""

    model: str = ""
    mode: str = "online"
    response_format: str = "json_schema"
    conversations: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    errors: int = 0
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    retry_budget_exhausted: int = 0  # conversations given up on: the run's retry budget was spent
    unavailable: int = 0  # conversations not sent: the circuit breaker was open
    prompt_tokens: int = 0  # spent by this call
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # what the cache hits had cost when first obtained
    cached_completion_tokens: int = 0
    provider_cached_tokens: int = 0  # of prompt_tokens, served from the provider's prompt cache
    budget_exhausted: int = 0  # conversations not sent: the run's spend reached its budget
    cost_usd: float | None = None  # None: no price known for the model
    saved_cost_usd: float | None = None
    elapsed_s: float = 0.0
    # What the PII redaction replaced in the texts sent (kind -> values), and in how many
    # conversations; empty when the PII mode is off.
    pii_redacted: dict[str, int] = field(default_factory=dict)
    pii_redacted_conversations: int = 0

    def count_redactions(self, found: Mapping[str, int], conversations: int) -> None:
        """Add redaction counts (kind -> values replaced in `conversations` conversations)."""
        for kind, n in found.items():
            self.pii_redacted[kind] = self.pii_redacted.get(kind, 0) + n
        self.pii_redacted_conversations += conversations

    def as_metadata(self) -> dict[str, float | int | str]:
        """Scalar figures as `llm_*` metadata (the PII counts are reported by the asset)."""
        return {
            f"llm_{name}": round(value, 6) if isinstance(value, float) else value
            for name, value in asdict(self).items()
            if value is not None and not name.startswith("pii_")
        }
