"""PII redaction at egress: what an LLM endpoint receives holds placeholders, never the data.

The pipeline runs for real (Dagster `materialize` of the layers, the `openai` enricher) against
the loopback OpenAI-compatible server, which records every request body as it arrived.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import orjson
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from enrichment_assets.cli.runner import land_files
from enrichment_assets.defs.conversations.jobs import LAYER_ASSETS
from enrichment_assets.defs.resources import (
    LakeResource,
    LLMResource,
    PiiRedactionResource,
    app_database,
)
from enrichment_assets.enrichers.base import CONVERSATION_INPUT_SCHEMA
from enrichment_assets.enrichers.batch import BatchOptions
from enrichment_assets.enrichers.openai import OpenAIEnricher
from enrichment_assets.lake import Lake
from enrichment_assets.redaction import PII_KINDS
from enrichment_assets.sample_pii import planted_conversations, planted_corpus
from tests.factories import conversation, message, read_jsonl, write_jsonl
from tests.llm_server import LoopbackLLMServer

PLACEHOLDER = re.compile(r"<(?:EMAIL|PHONE|CARD|IBAN|IP)_\d+>")
_SEPARATORS = re.compile(r"[ \-]")


@pytest.fixture
def recording_server() -> LoopbackLLMServer:
    with LoopbackLLMServer(record_bodies=True) as server:
        yield server


def openai_llm(server: LoopbackLLMServer, **overrides: object) -> LLMResource:
    settings = {
        "enricher": "openai",
        "base_url": server.base_url,
        "api_key": "sk-test-egress",
        "concurrency": 16,
        "timeout_s": 10.0,
        "max_attempts": 3,
        **overrides,
    }
    return LLMResource(**settings)  # type: ignore[arg-type]


def run_layers(
    instance: DagsterInstance, partition: str, server: LoopbackLLMServer, mode: str
) -> None:
    result = materialize(
        LAYER_ASSETS,
        partition_key=partition,
        instance=instance,
        resources={
            "lake": LakeResource(),
            "enricher": openai_llm(server),
            "app_db": app_database(),
            "pii": PiiRedactionResource(mode=mode),
        },
        raise_on_error=False,
    )
    assert result.success


def sent_conversations(server: LoopbackLLMServer) -> list[str]:
    """The conversation text of every chat request the server received."""
    texts = []
    for path, body in server.recorded_bodies:
        if path.endswith("/chat/completions"):
            messages = orjson.loads(body)["messages"]
            texts.append(next(m["content"] for m in reversed(messages) if m["role"] == "user"))
    return texts


def test_no_planted_value_reaches_the_endpoint_and_clean_text_is_sent_as_is(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, recording_server: LoopbackLLMServer
) -> None:
    records, planted, pii_free = planted_corpus(1000)
    assert set(Counter(v.kind for v in planted)) == set(PII_KINDS)
    (partition,) = land_files(lake, instance, [write_jsonl(tmp_path / "pii.jsonl", records)])

    run_layers(instance, partition, recording_server, "egress")

    sent = sent_conversations(recording_server)
    assert len(sent) == 1000  # one request per conversation: nothing skipped the endpoint
    everything = b"\n".join(body for _, body in recording_server.recorded_bodies).decode()
    compact = _SEPARATORS.sub("", everything)
    # No planted value, as written or without its separators, in any byte that was sent.
    leaked = [v for v in planted if v.text in everything or _SEPARATORS.sub("", v.text) in compact]
    recall = 1 - len(leaked) / len(planted)
    assert not leaked, (f"recall {recall:.4f}", leaked[:5])
    # What replaced them: typed placeholders, as many as the values planted (and echoed).
    placeholders = Counter(
        p.split("_")[0].strip("<") for text in sent for p in PLACEHOLDER.findall(text)
    )
    assert set(placeholders) == set(PII_KINDS)
    assert sum(placeholders.values()) >= len(planted)

    # Clean text is left alone: each PII-free message went out as it was written.
    sent_lines = {line for text in sent for line in text.split("\n")}
    untouched = [f"{role}: {' '.join(content.split())}" in sent_lines for role, content in pii_free]
    assert len(pii_free) > 5000
    assert sum(untouched) / len(pii_free) >= 0.99, sum(untouched) / len(pii_free)

    # The counts per kind are the enriched layer's metadata, and match what was sent.
    event = instance.get_latest_materialization_event(AssetKey("enriched_conversations"))
    metadata = event.asset_materialization.metadata  # type: ignore[union-attr]
    assert metadata["pii_mode"].value == "egress"
    assert metadata["pii_redacted"].value == {kind: placeholders[kind] for kind in PII_KINDS}
    assert metadata["pii_redacted_conversations"].value == 1000

    # The outputs keep the text in the egress mode (the export mode redacts the dataset).
    exported = lake.export_path("training", partition).read_text()
    assert sum(v.text in exported for v in planted) >= 0.95 * len(planted)


def pii_and_plain_batch(tmp_path: Path) -> tuple[Path, list[str]]:
    secrets_ = ["anna.schmidt@example.com", "+44 20 7946 0958"]
    records = [
        conversation(
            messages=[
                message("user", f"My email is {secrets_[0]}, and {secrets_[0]} only."),
                message("assistant", "Noted."),
            ]
        ),
        conversation(
            messages=[message("user", f"Call me on {secrets_[1]}."), message("assistant", "Sure.")]
        ),
        conversation(
            messages=[message("user", "How do I reset my password?"), message("assistant", "So.")]
        ),
        conversation(
            messages=[message("user", "Order 1234-5678 is late."), message("assistant", "Sorry.")]
        ),
    ]
    return write_jsonl(tmp_path / "mixed.jsonl", records), secrets_


def test_the_cache_key_is_of_the_redacted_request_and_mode_off_sends_the_text(
    lake: Lake, instance: DagsterInstance, tmp_path: Path, recording_server: LoopbackLLMServer
) -> None:
    path, values = pii_and_plain_batch(tmp_path)
    (partition,) = land_files(lake, instance, [path])

    run_layers(instance, partition, recording_server, "egress")
    sent = sent_conversations(recording_server)
    assert len(sent) == 4
    assert not any(v in text for v in values for text in sent)
    # One value, one placeholder within its conversation.
    assert any(text.count("<EMAIL_1>") == 2 and "<EMAIL_2>" not in text for text in sent)
    docs = read_jsonl(lake.export_path("enriched", partition))
    assert [d["enrichment"]["error"] for d in docs] == [None] * 4

    # Mode off asks again for the two conversations with PII only: their cached answers were
    # for the redacted request, which is not what is asked now; the two others, whose request
    # is the same in both modes, are answered from the cache.
    recording_server.configure(recording_server.faults)
    run_layers(instance, partition, recording_server, "off")
    resent = sent_conversations(recording_server)
    assert len(resent) == 2
    assert {v for v in values for text in resent if v in text} == set(values)
    event = instance.get_latest_materialization_event(AssetKey("enriched_conversations"))
    metadata = event.asset_materialization.metadata  # type: ignore[union-attr]
    assert metadata["pii_mode"].value == "off"
    assert "pii_redacted" not in metadata


def planted_frame(planted: list) -> pl.DataFrame:
    """The planted conversations as the enricher receives them."""
    return pl.DataFrame(
        {
            "conversation_id": [r["conversation_id"] for r, _ in planted],
            "messages": [
                [
                    {"role": m["role"], "content": m["content"], "timestamp": None}
                    for m in r["messages"]
                ]
                for r, _ in planted
            ],
        },
        schema=CONVERSATION_INPUT_SCHEMA,
    )


def test_the_batch_api_path_uploads_redacted_text_only(
    recording_server: LoopbackLLMServer,
) -> None:
    planted = planted_conversations(40, seed=3)
    frame = planted_frame(planted)
    enricher = OpenAIEnricher(
        base_url=recording_server.base_url,
        api_key="sk-test-egress",
        mode="batch",
        batch_options=BatchOptions(poll_interval_s=0.01),
    )
    annotations = enricher.annotate(frame)

    assert annotations["error"].null_count() == 40
    paths = Counter(path for path, _ in recording_server.recorded_bodies)
    assert paths["/v1/files"] == 1 and paths["/v1/batches"] == 1
    uploaded = b"".join(body for _, body in recording_server.recorded_bodies).decode()
    assert "<EMAIL_1>" in uploaded or "<PHONE_1>" in uploaded
    assert [v.text for _, values in planted for v in values if v.text in uploaded] == []
    assert sum(enricher.stats.pii_redacted.values()) >= sum(len(v) for _, v in planted)
    assert enricher.stats.pii_redacted_conversations == 40


def test_a_chunk_is_redacted_once_for_its_estimate_and_its_requests(
    recording_server: LoopbackLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cost estimate keys the chunk (redacted) before anything is sent; the requests
    of that same chunk reuse it. The real redaction runs, counted."""
    import enrichment_assets.enrichers.openai as openai_enricher

    redacted_rows: list[int] = []
    redact = openai_enricher.redact_messages

    def counted(frame: pl.DataFrame, **options: object) -> object:
        redacted_rows.append(frame.height)
        return redact(frame, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(openai_enricher, "redact_messages", counted)
    planted = planted_conversations(20, seed=5)
    frame = planted_frame(planted)
    enricher = OpenAIEnricher(base_url=recording_server.base_url, api_key="sk-test-egress")

    assert enricher.estimate(frame).requests == 20
    annotations = enricher.annotate(frame)
    assert redacted_rows == [20]  # once, for both
    assert annotations["error"].null_count() == 20
    sent = sent_conversations(recording_server)
    assert len(sent) == 20
    assert [v.text for _, values in planted for v in values if any(v.text in t for t in sent)] == []
    assert enricher.stats.pii_redacted_conversations == 20

    # Another chunk (or the same one again) is keyed anew: only one estimate is kept.
    enricher.annotate(frame.slice(0, 5))
    assert redacted_rows == [20, 5]
