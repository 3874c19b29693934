"""PII redaction: recall on planted personal data, false positives on risky clean text, speed.

    uv run python benchmarks/bench_redaction.py [--conversations 1000] [--clean 10000]

Measured in the same run:
- recall: conversations of the sample generator with e-mails, phone numbers of 13 countries
  (international, `00` and US national notations), Luhn-valid cards, IBANs of 9 countries
  and IPv4/IPv6 addresses planted (`sample_pii.planted_conversations`), redacted one
  conversation at a time as the `openai` enricher does (`redact_turns`): a planted value
  counts as found when it is gone and a placeholder of its kind is there;
- false positives: PII-free messages full of dates, times, prices, order and ticket ids,
  versions, error codes (`sample_pii.clean_messages`): the share left untouched;
- speed, on the clean messages repeated to --scale x: the frame path of the `export` mode
  (`redact_messages`: one Polars regex over the column, exact checks on candidates only)
  against the same exact checks run on every message (the baseline without the scan).
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter

import polars as pl

from enrichment_assets.redaction import PII_KINDS, detect, redact_messages, redact_turns
from enrichment_assets.sample_data import generate_conversations
from enrichment_assets.sample_pii import clean_messages, planted_conversations

PLACEHOLDER = re.compile(r"<(EMAIL|PHONE|CARD|IBAN|IP)_\d+>")


def recall(conversations: int) -> None:
    planted: Counter[str] = Counter()
    found: Counter[str] = Counter()
    corpus = planted_conversations(conversations)
    started = time.perf_counter()
    for record, values in corpus:
        turns, _ = redact_turns([(m["role"], m["content"]) for m in record["messages"]])
        text = "\n".join(content for _, content in turns)
        kinds = Counter(PLACEHOLDER.findall(text))
        for value in values:
            planted[value.kind] += 1
            found[value.kind] += value.text not in text and kinds[value.kind] > 0
    elapsed = time.perf_counter() - started
    total = sum(planted.values())
    print(f"recall: {sum(found.values()) / total:.2%} of {total} planted values")
    for kind in PII_KINDS:
        print(
            f"  {kind:<6} {found[kind]:>5} / {planted[kind]:<5} {found[kind] / planted[kind]:.2%}"
        )
    print(f"  redact_turns: {conversations / elapsed:,.0f} conversations/s")


def false_positives(count: int) -> list[str]:
    messages = clean_messages(count)
    changed = [m for m in messages if redact_turns([("user", m)])[0][0][1] != m]
    print(
        f"clean messages left untouched: {1 - len(changed) / len(messages):.2%} "
        f"({len(changed)} of {len(messages)} changed)"
    )
    for message in changed[:5]:
        print(f"  changed: {message[:160]!r}")
    return messages


def speed(scale: int) -> None:
    records = list(generate_conversations(scale, seed=3, defect_rate=0.0))
    frame = pl.DataFrame({"messages": [r["messages"] for r in records]})  # type: ignore[index]
    messages = frame.select(pl.col("messages").list.len().sum()).item()

    started = time.perf_counter()
    result = redact_messages(frame)
    frame_time = time.perf_counter() - started

    contents = [m["content"] for r in records for m in r["messages"]]  # type: ignore[index]
    started = time.perf_counter()
    for content in contents:
        redact_turns([("user", content)])
    per_message = time.perf_counter() - started

    started = time.perf_counter()
    for content in contents:
        detect(content, scan=False)
    baseline = time.perf_counter() - started
    print(f"speed over {scale:,} sample conversations ({messages:,} messages):")
    print(
        f"  redact_messages (one Polars scan, exact checks on "
        f"{result.messages_scanned:,} candidates): {frame_time:.2f} s"
    )
    print(f"  redact_turns, message by message (Python gate):  {per_message:.2f} s")
    print(f"  every detector on every message (no gate):       {baseline:.2f} s")
    print(f"  baseline / frame path: {baseline / frame_time:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--clean", type=int, default=10_000)
    parser.add_argument("--scale", type=int, default=20_000)
    args = parser.parse_args()
    recall(args.conversations)
    false_positives(args.clean)
    speed(args.scale)


if __name__ == "__main__":
    main()
