"""The `Enricher` interface: AI annotations for a chunk of validated conversations.

An enricher receives a Polars frame of validated conversations and returns one
annotation row per conversation. Implementations: `heuristic` (offline,
deterministic, set-based in DuckDB) and `openai` (any OpenAI-compatible endpoint).

Rules every implementation keeps:
- exactly one output row per input `conversation_id`, in any order;
- a failed annotation leaves every AI field NULL and sets `error`: never a
  default value (a confidence of 0.0 would hide the failure);
- `enricher`, `model` and `prompt_version` say who produced the row.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import polars as pl

# The input an enricher may rely on (other columns may be present too).
CONVERSATION_INPUT_SCHEMA: dict[str, pl.DataType] = {
    "conversation_id": pl.String(),
    "messages": pl.List(
        pl.Struct(
            {
                "role": pl.String(),  # canonical: system | user | assistant
                "content": pl.String(),
                "timestamp": pl.Datetime("us", "UTC"),
            }
        )
    ),
}

# The annotation contract: the columns every enricher returns, in this order.
ANNOTATION_SCHEMA: dict[str, pl.DataType] = {
    "conversation_id": pl.String(),
    "summary": pl.String(),
    "topics": pl.List(pl.String()),
    "emotional_tone": pl.String(),
    "sentiment": pl.Float64(),  # -1.0 (negative) .. 1.0 (positive)
    "label": pl.String(),
    "confidence": pl.Float64(),  # 0.0 .. 1.0
    "quality_score": pl.Float64(),  # 0.0 .. 100.0
    "enricher": pl.String(),
    "model": pl.String(),
    "prompt_version": pl.String(),
    "error": pl.String(),
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "cached": pl.Boolean(),
}

# The AI fields that stay NULL when an annotation fails.
AI_FIELDS: tuple[str, ...] = (
    "summary",
    "topics",
    "emotional_tone",
    "sentiment",
    "label",
    "confidence",
    "quality_score",
)

# The classification labels an enricher may assign.
LABELS: tuple[str, ...] = (
    "question_answering",
    "troubleshooting",
    "emotional_support",
    "creative_writing",
    "instruction_following",
    "other",
)

EMOTIONAL_TONES: tuple[str, ...] = ("positive", "neutral", "negative", "mixed")


@runtime_checkable
class Enricher(Protocol):
    """Annotates conversations; see the module docstring for the contract."""

    name: str

    def annotate(self, conversations: pl.DataFrame) -> pl.DataFrame:
        """Return one row per input conversation, with ANNOTATION_SCHEMA columns."""
        ...


def concurrent_chunks(enricher: Enricher) -> int:
    """How many chunks the enricher may annotate at once, in threads (default 1).

    An enricher opts in with a `concurrent_chunks` attribute when `annotate` keeps no
    state between calls and releases the GIL for its work (the heuristic: DuckDB and
    Polars), so that one chunk's serial steps overlap another's parallel ones.
    """
    return max(1, int(getattr(enricher, "concurrent_chunks", 1)))


def empty_annotations() -> pl.DataFrame:
    """A zero-row frame with the annotation schema."""
    return pl.DataFrame(schema=ANNOTATION_SCHEMA)


def conform_annotations(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast and order `frame` to ANNOTATION_SCHEMA (missing columns become NULL)."""
    return frame.select(
        [
            (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in ANNOTATION_SCHEMA.items()
        ]
    )
