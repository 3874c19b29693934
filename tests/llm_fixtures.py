"""Fixtures and factories for the LLM enricher tests (import them into a test module).

from tests.llm_fixtures import llm_server  # noqa: F401  (a pytest fixture)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping

import polars as pl
import pytest
from dagster import ConfigurableResource

from enrichment_assets.defs.resources import LakeResource, PiiRedactionResource, app_database
from enrichment_assets.enrichers.base import CONVERSATION_INPUT_SCHEMA
from tests.llm_server import LoopbackLLMServer


@pytest.fixture
def llm_server() -> Iterator[LoopbackLLMServer]:
    """A fault-free loopback server on 127.0.0.1; `llm_server.configure(Faults(...))` per test."""
    with LoopbackLLMServer() as server:
        yield server


def make_conversations(
    count: int,
    *,
    topic: str = "refunds",
    start: int = 0,
    marked: Mapping[int, str] | None = None,
) -> pl.DataFrame:
    """`count` distinct validated conversations (user question, assistant answer).

    `marked` puts a marker into the question of conversation i ({i: marker}), for the
    loopback server's targeted faults (`Faults(targeted={marker: kind})`).
    """
    marked = marked or {}
    rows = [
        {
            "conversation_id": conversation_id(i, topic),
            "messages": [
                {
                    "role": "user",
                    "content": f"Question {i} about {topic}? {marked.get(i, '')}".strip(),
                    "timestamp": None,
                },
                {"role": "assistant", "content": f"Answer {i} about {topic}.", "timestamp": None},
            ],
        }
        for i in range(start, start + count)
    ]
    return pl.DataFrame(rows, schema=CONVERSATION_INPUT_SCHEMA)


def conversation_id(i: int, topic: str = "refunds") -> str:
    """The id `make_conversations` gives conversation i."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"conversation/{topic}/{i}"))


def layer_resources(enricher: ConfigurableResource, **overrides: object) -> dict[str, object]:
    """The resources a run of the layers gets in the definitions, with this enricher."""
    return {
        "lake": LakeResource(),
        "enricher": enricher,
        "app_db": app_database(),
        "pii": PiiRedactionResource(),
        **overrides,
    }
