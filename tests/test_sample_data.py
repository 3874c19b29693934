"""The sample generator: deterministic, exact counts, realistic, with the defects it promises."""

from __future__ import annotations

import csv
import itertools
import re
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from enrichment_assets.sample_data import (
    DEFECT_KINDS,
    SEEDS_DIR,
    generate_conversations,
    write_sample_files,
)

END = datetime(2025, 3, 10, tzinfo=UTC)
TIERS = {"template", "scenario", "edge_case"}
ROLES = {"system", "user", "assistant"}
MOJIBAKE = re.compile("â€|â†|Ã©|‚Ä|‚Ü|√©")
SLUG = re.compile(r"^[a-z]+(-[a-z0-9]+)+$")
REFERENCE_FILES = {
    "persona_id": "personas",
    "emotional_arc_id": "emotional_arcs",
    "training_topic_id": "training_topics",
    "template_id": "templates",
}


def seed_rows(name: str) -> list[dict[str, str]]:
    with (SEEDS_DIR / f"{name}.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def parses_as_timestamp(value: object) -> bool:
    try:
        datetime.fromisoformat(str(value))
    except ValueError:
        return False
    return True


def parses(line: str) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False  # a broken_json defect
    return True


def rule_broken(record: dict | str) -> str | None:
    """The defect a record carries, judged by the canonical contract; None when valid."""
    if isinstance(record, str):
        return "broken_json"
    try:
        uuid.UUID(record["conversation_id"])
    except ValueError:
        return "malformed_id"
    if record["tier"] not in TIERS:
        return "bad_tier"
    messages = record["messages"]
    roles = [m["role"] for m in messages]
    if any(role not in ROLES for role in roles):
        return "unknown_role"
    if any(not m["content"] for m in messages):
        return "empty_content"
    if "user" not in roles or "assistant" not in roles:
        return "missing_assistant"
    stamps = [record["created_at"], *(m["timestamp"] for m in messages)]
    if not all(parses_as_timestamp(s) for s in stamps):
        return "bad_timestamp"
    return None


def test_same_seed_gives_same_records_and_other_seeds_differ():
    first = list(generate_conversations(300, seed=11, end=END))
    assert first == list(generate_conversations(300, seed=11, end=END))
    assert first != list(generate_conversations(300, seed=12, end=END))


@pytest.mark.parametrize("n", [0, 1, 17, 2000])
def test_yields_exactly_n_records_defects_included(n):
    assert sum(1 for _ in generate_conversations(n, end=END, defect_rate=0.2)) == n


def test_records_without_defects_satisfy_the_canonical_contract():
    records = list(generate_conversations(1000, defect_rate=0.0, end=END))
    assert [rule_broken(r) for r in records] == [None] * len(records)


def test_defect_rate_is_roughly_respected():
    records = list(generate_conversations(2000, defect_rate=0.03, end=END))
    defects = sum(rule_broken(r) is not None for r in records)
    assert 30 <= defects <= 90  # 60 expected, +-50 %


def test_every_defect_kind_occurs_and_each_breaks_its_rule():
    kinds = Counter(rule_broken(r) for r in generate_conversations(700, defect_rate=1.0, end=END))
    assert set(kinds) == set(DEFECT_KINDS)


def test_broken_json_defect_is_a_single_unparseable_line():
    broken = [
        r for r in generate_conversations(500, defect_rate=1.0, end=END) if isinstance(r, str)
    ]
    assert broken
    for line in broken:
        assert "\n" not in line
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(line)


def test_valid_records_have_uuid_ids_and_both_speakers():
    for record in generate_conversations(2000, end=END):
        if rule_broken(record) is None:
            assert uuid.UUID(record["conversation_id"]).version == 4
            roles = {m["role"] for m in record["messages"]}
            assert {"user", "assistant"} <= roles
            assert 4 <= len(record["messages"]) <= 20


def test_some_messages_carry_real_mojibake_and_others_correct_non_ascii():
    contents = [
        m["content"]
        for r in generate_conversations(2000, end=END)
        if isinstance(r, dict)
        for m in r["messages"]
    ]
    mojibake = [c for c in contents if MOJIBAKE.search(c)]
    assert "donâ€™t" in " ".join(mojibake) or "Itâ€™s" in " ".join(mojibake)
    assert any("‚Äô" in c for c in mojibake)
    assert 0.005 < len(mojibake) / len(contents) < 0.05
    emoji_or_cjk = [c for c in contents if re.search("[\U0001f300-\U0001faff\u3040-\u9fff]", c)]
    assert emoji_or_cjk


def test_no_mojibake_when_rate_is_zero():
    records = generate_conversations(500, mojibake_rate=0.0, end=END)
    contents = (m["content"] for r in records if isinstance(r, dict) for m in r["messages"])
    assert not any(MOJIBAKE.search(c) for c in contents)


def test_reference_ids_come_mostly_from_the_seed_files():
    known = {
        field: {row[field] for row in seed_rows(name)} for field, name in REFERENCE_FILES.items()
    }
    tier_of = {row["template_id"]: row["tier"] for row in seed_rows("templates")}
    records = [
        r for r in generate_conversations(2000, defect_rate=0.0, end=END) if isinstance(r, dict)
    ]
    unknown = Counter()
    for record in records:
        for field in REFERENCE_FILES:
            if record[field] not in known[field]:
                unknown[field] += 1
                assert "-unknown-" in record[field]
        if record["template_id"] in tier_of:
            assert record["tier"] == tier_of[record["template_id"]]
    unknown_share = sum(unknown.values()) / len(records)
    assert 0.02 < unknown_share < 0.09  # ~5 % of conversations carry one unknown id


def test_seed_files_are_realistic_reference_tables():
    expected_columns = {
        "personas": ["persona_id", "name", "description", "communication_style"],
        "emotional_arcs": [
            "emotional_arc_id",
            "name",
            "description",
            "start_emotion",
            "end_emotion",
        ],
        "training_topics": ["training_topic_id", "name", "domain", "difficulty"],
        "templates": ["template_id", "name", "tier", "description"],
    }
    for name, columns in expected_columns.items():
        rows = seed_rows(name)
        assert list(rows[0]) == columns
        assert 8 <= len(rows) <= 15
        ids = [row[columns[0]] for row in rows]
        assert len(set(ids)) == len(ids)
        assert all(SLUG.match(i) for i in ids)
        assert all(all(row.values()) for row in rows)
    assert {row["tier"] for row in seed_rows("templates")} == TIERS


def test_timestamps_are_utc_within_the_last_week_and_increase():
    for record in generate_conversations(500, defect_rate=0.0, end=END):
        created_at = datetime.fromisoformat(record["created_at"])
        assert created_at.utcoffset() == timedelta(0)
        assert END - timedelta(days=7) <= created_at < END
        stamps = [datetime.fromisoformat(m["timestamp"]) for m in record["messages"]]
        assert stamps[0] == created_at
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
        assert all(5 <= gap <= 300 for gap in gaps)


def test_users_come_from_a_pool_of_fifty():
    users = {r["user_id"] for r in generate_conversations(3000, defect_rate=0.0, end=END)}
    assert 40 <= len(users) <= 50
    assert all(re.fullmatch(r"user-00[0-5]\d", u) for u in users)


@pytest.mark.parametrize("message_chars", [100, 300, 800])
def test_mean_message_length_follows_message_chars(message_chars):
    lengths = [
        len(m["content"])
        for r in generate_conversations(500, message_chars=message_chars, end=END)
        if isinstance(r, dict)
        for m in r["messages"]
        if m["role"] != "system"
    ]
    assert 0.8 * message_chars < sum(lengths) / len(lengths) < 1.25 * message_chars


def test_content_carries_topic_keywords():
    text = " ".join(
        m["content"].lower()
        for r in generate_conversations(300, defect_rate=0.0, end=END)
        for m in r["messages"]
    )
    for word in ("error", "crash", "install", "fix", "refund", "anxious", "poem", "sql"):
        assert word in text


def test_each_output_format_parses_back(tmp_path: Path):
    formats = ("jsonl", "json_array", "openai_jsonl", "sharegpt_json")
    paths = write_sample_files(tmp_path, 403, files=4, formats=formats, end=END, defect_rate=0.5)
    assert [p.suffix for p in paths] == [".jsonl", ".json", ".jsonl", ".json"]
    counts = []
    for path, fmt in zip(paths, formats, strict=True):
        data = path.read_bytes()
        if fmt.endswith("jsonl"):
            lines = data.decode("utf-8").splitlines()
            parsed = [orjson.loads(line) for line in lines if parses(line)]
            assert 0 < len(parsed) < len(lines)
            counts.append(len(lines))
        else:
            parsed = orjson.loads(data)  # the whole array parses: broken records are strings
            assert any(isinstance(item, str) for item in parsed)
            parsed = [item for item in parsed if isinstance(item, dict)]
            counts.append(len(orjson.loads(data)))
        if fmt == "openai_jsonl":
            assert all(list(item) == ["messages"] for item in parsed)
            assert all(set(m) == {"role", "content"} for i in parsed for m in i["messages"])
        elif fmt == "sharegpt_json":
            assert all(list(item) == ["conversations"] for item in parsed)
            speakers = {turn["from"] for item in parsed for turn in item["conversations"]}
            assert {"human", "gpt"} <= speakers <= {"human", "gpt", "system", "narrator"}
        else:
            assert all("conversation_id" in item for item in parsed)
    assert counts == [101, 101, 101, 100]


def test_files_hold_exactly_the_generated_records(tmp_path: Path):
    paths = write_sample_files(tmp_path, 250, files=3, seed=5, end=END)
    lines = [line for p in paths for line in p.read_text(encoding="utf-8").splitlines()]
    expected = [
        r if isinstance(r, str) else orjson.dumps(r).decode()
        for r in generate_conversations(250, seed=5, end=END)
    ]
    assert lines == expected
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_rejects_an_unknown_format(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown formats"):
        write_sample_files(tmp_path, 10, formats=("csv",))
