"""The offline `heuristic` enricher: one deterministic annotation row per conversation."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid

import polars as pl
import pytest

from enrichment_assets.enrichers.base import (
    ANNOTATION_SCHEMA,
    CONVERSATION_INPUT_SCHEMA,
    EMOTIONAL_TONES,
    LABELS,
    Enricher,
)
from enrichment_assets.enrichers.heuristic import HeuristicEnricher, Lexicons

START = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)


def message(role: str, content: str, minute: int = 0) -> dict:
    return {"role": role, "content": content, "timestamp": START + dt.timedelta(minutes=minute)}


def dialogue(*turns: str) -> list[dict]:
    """Alternating user/assistant messages, starting with the user."""
    roles = ("user", "assistant")
    return [message(roles[i % 2], text, i) for i, text in enumerate(turns)]


def conversations(*message_lists: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"conversation_id": str(uuid.uuid4()), "messages": m} for m in message_lists],
        schema=CONVERSATION_INPUT_SCHEMA,
    )


def troubleshooting() -> list[dict]:
    return dialogue(
        "My app crashes with an error right after I install the update. How do I fix it?",
        "That error usually means the install is incomplete. Reinstall the package, then "
        "restart the app; the crash should be fixed.",
        "I reinstalled it but the error and the crash are still there.",
        "Then fix the driver: install the latest driver version and the error goes away.",
    )


def negative() -> list[dict]:
    return dialogue(
        "I feel terrible and sad. Everything is awful and I hate how hopeless it is.",
        "I am sorry you feel so miserable and lonely. That sounds painful and exhausting.",
        "It is the worst week, I am angry and frustrated and upset.",
        "Feeling overwhelmed and hurt like this is really hard.",
    )


def positive() -> list[dict]:
    return dialogue(
        "Can you write a short poem about the spring garden for my daughter?",
        "Happy to! Here is a poem: bright tulips dance, wonderful and glad in the sun.",
        "This is wonderful, I love it, thank you so much!",
        "Great, I am glad you enjoyed the poem.",
    )


@pytest.fixture(scope="module")
def enricher() -> HeuristicEnricher:
    return HeuristicEnricher()


def test_satisfies_enricher_protocol_and_labels_itself(enricher: HeuristicEnricher) -> None:
    assert isinstance(enricher, Enricher)
    out = enricher.annotate(conversations(positive()))
    row = out.row(0, named=True)
    assert row["enricher"] == "heuristic"
    assert row["model"] is None
    assert row["prompt_version"] == enricher.prompt_version
    assert enricher.prompt_version.startswith("heuristic-v1+")
    assert row["error"] is None and row["prompt_tokens"] is None
    assert row["cached"] is False


def test_returns_one_row_per_conversation_in_input_order(enricher: HeuristicEnricher) -> None:
    frame = conversations(troubleshooting(), negative(), positive(), troubleshooting())
    out = enricher.annotate(frame.with_columns(extra=pl.lit("ignored")))
    assert out.schema == pl.Schema(ANNOTATION_SCHEMA)
    assert out["conversation_id"].to_list() == frame["conversation_id"].to_list()


def test_labels_confidence_tone_and_quality_stay_in_range(enricher: HeuristicEnricher) -> None:
    out = enricher.annotate(conversations(troubleshooting(), negative(), positive(), []))
    assert set(out["label"]) <= set(LABELS)
    assert set(out["emotional_tone"]) <= set(EMOTIONAL_TONES)
    assert out["confidence"].is_between(0.0, 1.0).all()
    assert out["quality_score"].is_between(0.0, 100.0).all()
    assert out["sentiment"].is_between(-1.0, 1.0).all()
    assert out.select(pl.col("topics").list.len() <= 5).to_series().all()
    assert out.select(pl.col("summary").str.len_chars() <= 280).to_series().all()
    assert (
        out.select("summary", "topics", "sentiment", "label", "confidence")
        .null_count()
        .sum_horizontal()
        .item()
        == 0
    )


def test_negative_conversation_gets_negative_sentiment_and_tone(
    enricher: HeuristicEnricher,
) -> None:
    row = enricher.annotate(conversations(negative())).row(0, named=True)
    assert row["sentiment"] < -0.3
    assert row["emotional_tone"] == "negative"
    assert row["label"] == "emotional_support"


def test_positive_poem_request_is_positive_creative_writing(enricher: HeuristicEnricher) -> None:
    row = enricher.annotate(conversations(positive())).row(0, named=True)
    assert row["emotional_tone"] == "positive"
    assert row["label"] == "creative_writing"


def test_conversation_pulling_both_ways_is_mixed(enricher: HeuristicEnricher) -> None:
    messages = dialogue(
        "I love this, it is wonderful and amazing.", "I hate it, awful and terrible."
    )
    row = enricher.annotate(conversations(messages)).row(0, named=True)
    assert row["emotional_tone"] == "mixed"


def test_troubleshooting_conversation_is_labelled_troubleshooting(
    enricher: HeuristicEnricher,
) -> None:
    row = enricher.annotate(conversations(troubleshooting())).row(0, named=True)
    assert row["label"] == "troubleshooting"
    assert 0.5 < row["confidence"] < 1.0
    assert row["topics"][0] == "error"


def test_topics_exclude_stopwords_and_short_words_and_break_ties_alphabetically(
    enricher: HeuristicEnricher,
) -> None:
    messages = dialogue(
        "What about these things? Zebra zebra zebra, apple apple, mango, kiwi, fig.",
        "Which would they have been? Banana banana, cherry, mango.",
    )
    row = enricher.annotate(conversations(messages)).row(0, named=True)
    stopwords = set(Lexicons.load().stopwords["word"])
    assert not set(row["topics"]) & stopwords
    assert row["topics"] == ["zebra", "apple", "banana", "mango", "cherry"]


def test_summary_joins_first_user_and_last_assistant_sentences(
    enricher: HeuristicEnricher,
) -> None:
    messages = [
        message("system", "You are a helpful assistant."),
        *dialogue(
            "How do I  reset\nmy password? I forgot it.",
            "Open settings.",
            "Thanks.",
            "You are welcome! Anything else?",
        ),
    ]
    row = enricher.annotate(conversations(messages)).row(0, named=True)
    assert row["summary"] == "How do I reset my password? You are welcome!"


def test_long_summary_is_cut_to_280_characters(enricher: HeuristicEnricher) -> None:
    messages = dialogue("word " * 200, "reply " * 200)
    summary = enricher.annotate(conversations(messages))["summary"][0]
    assert len(summary) == 280
    assert summary.endswith("…")


def test_alternating_substantial_replies_score_higher_than_terse_ones(
    enricher: HeuristicEnricher,
) -> None:
    terse = [message("user", "help"), message("user", "hello?"), message("assistant", "ok")]
    out = enricher.annotate(conversations(troubleshooting(), terse))
    good, bad = out["quality_score"].to_list()
    assert good > 80
    assert bad < 60


def test_conversation_without_letters_still_gets_a_neutral_row(
    enricher: HeuristicEnricher,
) -> None:
    out = enricher.annotate(conversations(dialogue("🙂🙂 !!! ???", "👍 ... 123"), []))
    assert out.height == 2
    row = out.row(0, named=True)
    assert row["topics"] == []
    assert row["sentiment"] == 0.0
    assert row["emotional_tone"] == "neutral"
    assert row["label"] == "other"
    assert row["confidence"] == pytest.approx(1 / len(LABELS))
    assert row["summary"] == "🙂🙂 !!! 👍 ..."
    assert out.row(1, named=True)["summary"] == ""


def test_same_input_gives_identical_output(enricher: HeuristicEnricher) -> None:
    frame = conversations(
        *[m for _ in range(50) for m in (troubleshooting(), negative(), positive())]
    )
    first = enricher.annotate(frame)
    second = HeuristicEnricher().annotate(frame)
    assert first.equals(second)


def test_empty_input_gives_empty_annotation_frame(enricher: HeuristicEnricher) -> None:
    out = enricher.annotate(pl.DataFrame(schema=CONVERSATION_INPUT_SCHEMA))
    assert out.height == 0
    assert out.schema == pl.Schema(ANNOTATION_SCHEMA)


def test_input_without_messages_column_is_rejected_with_the_column_name(
    enricher: HeuristicEnricher,
) -> None:
    with pytest.raises(ValueError, match="messages"):
        enricher.annotate(pl.DataFrame({"conversation_id": ["a"]}))


# The code location and the command as `enrich run` loads them, then the heuristic
# enricher annotating: which of the OpenAI stack got imported.
HEURISTIC_RUN_PROBE = """
import sys
import polars as pl
import enrichment_assets.cli.commands
import enrichment_assets.definitions
from enrichment_assets.enrichers.base import CONVERSATION_INPUT_SCHEMA
from enrichment_assets.defs.resources import LLMResource

enricher = LLMResource(enricher="heuristic").build_enricher()
frame = pl.DataFrame(
    [{"conversation_id": "c1", "messages": [{"role": "user", "content": "hi"}]}],
    schema=CONVERSATION_INPUT_SCHEMA,
)
assert enricher.annotate(frame).height == 1
print(sorted(m for m in ("openai", "httpx2", "httpx") if m in sys.modules))
"""


def test_a_heuristic_run_never_imports_the_openai_client() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", HEURISTIC_RUN_PROBE], capture_output=True, text=True, timeout=180
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.splitlines()[-1] == "[]"
