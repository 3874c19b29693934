"""PII redaction: planted personal data is replaced, PII-free text is left alone."""

from __future__ import annotations

import re
from collections import Counter

import polars as pl
import pytest

from enrichment_assets.defs.resources import PiiRedactionResource
from enrichment_assets.redaction import (
    PII_KINDS,
    detect,
    phone_region_from_env,
    pii_mode_from_env,
    redact_messages,
    redact_turns,
)
from enrichment_assets.sample_pii import clean_messages, planted_conversations

PLACEHOLDER = re.compile(r"<(EMAIL|PHONE|CARD|IBAN|IP)_\d+>")


def turns_of(record: dict) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in record["messages"]]


def test_redacts_planted_pii_in_1000_conversations_with_recall_of_at_least_99_percent() -> None:
    planted_total: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    for record, planted in planted_conversations(1000):
        turns, counts = redact_turns(turns_of(record))
        text = "\n".join(content for _, content in turns)
        kinds_left = Counter(PLACEHOLDER.findall(text))
        for value in planted:
            planted_total[value.kind] += 1
            # Gone, and replaced by a placeholder of its own kind.
            if value.text not in text and kinds_left[value.kind] > 0:
                removed[value.kind] += 1
        assert sum(counts.values()) == sum(kinds_left.values())
    assert set(planted_total) == set(PII_KINDS)
    recall = sum(removed.values()) / sum(planted_total.values())
    per_kind = {kind: removed[kind] / planted_total[kind] for kind in PII_KINDS}
    assert recall >= 0.99, per_kind
    assert min(per_kind.values()) >= 0.97, per_kind


def test_leaves_at_least_99_percent_of_pii_free_messages_untouched() -> None:
    messages = clean_messages(2000)
    # The clean set is not trivially clean: most messages carry dates, prices, ids, versions.
    assert sum(bool(re.search(r"\d", m)) for m in messages) > 1000
    changed = [m for m in messages if redact_turns([("user", m)])[0][0][1] != m]
    assert len(changed) / len(messages) <= 0.01, changed[:5]


def test_one_value_gets_one_placeholder_within_a_conversation() -> None:
    turns, counts = redact_turns(
        [
            ("user", "Mail Anna.Schmidt@example.com or call +44 20 7946 0958."),
            ("assistant", "Noted anna.schmidt@EXAMPLE.com, +442079460958; also ops@example.org?"),
            ("user", "Yes, and my other line is +49 30 901820."),
        ]
    )
    assert [content for _, content in turns] == [
        "Mail <EMAIL_1> or call <PHONE_1>.",
        "Noted <EMAIL_1>, <PHONE_1>; also <EMAIL_2>?",
        "Yes, and my other line is <PHONE_2>.",
    ]
    assert counts == {"EMAIL": 3, "PHONE": 3}
    # Numbering starts again in the next conversation.
    ((_, other),) = redact_turns([("user", "write to ops@example.org")])[0]
    assert other == "write to <EMAIL_1>"


def test_cards_need_the_luhn_check_and_ibans_their_check_digits() -> None:
    assert [d.kind for d in detect("card 4111 1111 1111 1111 please")] == ["CARD"]
    assert detect("card 4111 1111 1111 1112 please") == []
    assert [d.kind for d in detect("Amex 3782-822463-10005, Visa 4222222222222")] == [
        "CARD",
        "CARD",
    ]
    assert [d.kind for d in detect("IBAN DE89 3704 0044 0532 0130 00 THEN")] == ["IBAN"]
    assert detect("IBAN DE88 3704 0044 0532 0130 00") == []
    assert [d.kind for d in detect("to GB82WEST12345698765432.")] == ["IBAN"]


def test_ip_addresses_are_redacted_and_their_lookalikes_are_not() -> None:
    assert [d.key for d in detect("from 192.168.1.10 and 2001:db8::8a2e:370:7334.")] == [
        "192.168.1.10",
        "2001:db8::8a2e:370:7334",
    ]
    for text in (
        "version 4.2.1 at 10:30:00",
        "use std::map here",
        "999.1.1.1 is not an address",
        "timestamp 2024-06-01T10:00:30Z",
        "error 0x80070005",
    ):
        assert detect(text) == [], text


def test_national_phone_numbers_must_be_grouped_as_the_region_writes_them() -> None:
    assert [d.kind for d in detect("call (415) 555-2671 today")] == ["PHONE"]
    assert detect("your order ORD-2024-004512 ships today") == []
    # Only international numbers when no default region is wanted.
    assert detect("call (415) 555-2671 today", phone_region="ZZ") == []
    assert [d.key for d in detect("or 0049 30 901820", phone_region="ZZ")] == ["+4930901820"]


def test_frame_redaction_gives_what_per_conversation_redaction_gives() -> None:
    records = [record for record, _ in planted_conversations(200, seed=5)]
    # A conversation without any candidate, and one without messages, pass through as they are.
    records.append({"messages": [{"role": "user", "content": "hello", "timestamp": None}]})
    records.append({"messages": []})
    frame = pl.DataFrame(
        {"id": list(range(len(records))), "messages": [r["messages"] for r in records]}
    )
    result = redact_messages(frame)

    expected_counts: Counter[str] = Counter()
    for record, row in zip(records, result.frame.iter_rows(named=True), strict=True):
        turns, counts = redact_turns(turns_of(record))
        expected_counts.update(counts)
        assert [(m["role"], m["content"]) for m in row["messages"]] == turns
        # Other message fields are kept.
        assert [m["timestamp"] for m in row["messages"]] == [
            m.get("timestamp") for m in record["messages"]
        ]
    assert result.counts == {kind: expected_counts[kind] for kind in PII_KINDS}
    assert result.conversations == 200
    assert result.frame["id"].to_list() == list(range(len(records)))


def test_modes_and_regions_come_from_the_environment_or_the_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ENRICH_PII_MODE", raising=False)
    monkeypatch.delenv("ENRICH_PII_PHONE_REGION", raising=False)
    assert pii_mode_from_env() == "egress"
    assert phone_region_from_env() == "US"
    monkeypatch.setenv("ENRICH_PII_MODE", "Export")
    monkeypatch.setenv("ENRICH_PII_PHONE_REGION", "de")
    assert (pii_mode_from_env(), phone_region_from_env()) == ("export", "DE")
    assert PiiRedactionResource().pii_mode == "export"
    assert PiiRedactionResource(mode="off").pii_mode == "off"
    monkeypatch.setenv("ENRICH_PII_MODE", "everything")
    with pytest.raises(ValueError, match=r"^ENRICH_PII_MODE='everything': expected one of"):
        pii_mode_from_env()
    with pytest.raises(ValueError, match=r"^pii.phone_region='Narnia'"):
        _ = PiiRedactionResource(phone_region="Narnia").region
