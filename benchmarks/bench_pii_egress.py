"""Benchmark: PII redaction at egress, through the `openai` enricher, against mode `off`.

    uv run python benchmarks/bench_pii_egress.py --conversations 1000

The sample generator's conversations with planted personal data (`sample_pii`: e-mails,
phone numbers of 13 countries, Luhn-valid cards, IBANs of 9 countries, IPv4/IPv6; about half
of the PII-free messages replaced by PII-free text full of dates, prices, ids and versions)
are annotated by `OpenAIEnricher` against the loopback OpenAI-compatible server, which
records every request body, twice in the same run, each with a fresh cache:

- `egress`: what the pipeline does by default;
- `off`: the same requests without redaction (the baseline).

Prints, measured on what the server received in the `egress` pass: recall (planted values
absent from every request), the values left, the PII-free messages sent exactly as written
(clean text untouched), the placeholders per kind; and the wall time of each pass with the
ratio egress / off.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `tests.llm_server`

import orjson
import polars as pl

from enrichment_assets.enrichers.base import CONVERSATION_INPUT_SCHEMA
from enrichment_assets.enrichers.cache import EnrichmentCache
from enrichment_assets.enrichers.openai import OpenAIEnricher
from enrichment_assets.redaction import PII_KINDS
from enrichment_assets.sample_pii import planted_corpus
from tests.llm_server import LoopbackLLMServer

PLACEHOLDER = re.compile(r"<(EMAIL|PHONE|CARD|IBAN|IP)_\d+>")
_SEPARATORS = re.compile(r"[ \-]")


def sent_texts(server: LoopbackLLMServer) -> list[str]:
    texts = []
    for path, body in server.recorded_bodies:
        if path.endswith("/chat/completions"):
            messages = orjson.loads(body)["messages"]
            texts.append(next(m["content"] for m in reversed(messages) if m["role"] == "user"))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    args = parser.parse_args()

    records, planted, pii_free = planted_corpus(args.conversations)
    frame = pl.DataFrame(
        {
            "conversation_id": [r["conversation_id"] for r in records],
            "messages": [
                [
                    {"role": m["role"], "content": m["content"], "timestamp": None}
                    for m in r["messages"]
                ]
                for r in records
            ],
        },
        schema=CONVERSATION_INPUT_SCHEMA,
    )
    print(
        f"{len(records)} conversations, {len(planted)} planted values "
        f"({dict(sorted(Counter(v.kind for v in planted).items()))}), "
        f"{len(pii_free)} PII-free messages"
    )
    timings: dict[str, float] = {}
    sent: list[str] = []
    for mode in ("off", "egress"):
        with LoopbackLLMServer(record_bodies=True) as server, tempfile.TemporaryDirectory() as tmp:
            enricher = OpenAIEnricher(
                base_url=server.base_url,
                api_key="sk-bench",
                concurrency=16,
                pii_mode=mode,  # type: ignore[arg-type]
                cache=EnrichmentCache(Path(tmp)),
            )
            started = time.perf_counter()
            annotations = enricher.annotate(frame)
            timings[mode] = time.perf_counter() - started
            assert annotations["error"].null_count() == len(records)
            if mode == "egress":
                sent = sent_texts(server)
                everything = b"\n".join(b for _, b in server.recorded_bodies).decode()
                redacted = dict(enricher.stats.pii_redacted)

    compact = _SEPARATORS.sub("", everything)
    leaked = [v for v in planted if v.text in everything or _SEPARATORS.sub("", v.text) in compact]
    lines = {line for text in sent for line in text.split("\n")}
    untouched = sum(f"{r}: {' '.join(c.split())}" in lines for r, c in pii_free)
    placeholders = Counter(m for text in sent for m in PLACEHOLDER.findall(text))
    print(f"recall: {1 - len(leaked) / len(planted):.4%} ({len(leaked)} planted values sent)")
    for value in leaked[:10]:
        print(f"  sent: {value.kind} {value.text!r}")
    print(
        f"clean text untouched: {untouched / len(pii_free):.4%} "
        f"({len(pii_free) - untouched} of {len(pii_free)} PII-free messages changed)"
    )
    print(f"placeholders sent: {dict(sorted(placeholders.items()))}")
    print(f"counted by the enricher: { {k: redacted.get(k, 0) for k in PII_KINDS} }")
    print(
        f"annotate, {len(records)} conversations: off {timings['off']:.2f} s, "
        f"egress {timings['egress']:.2f} s = {timings['egress'] / timings['off']:.2f} x off"
    )


if __name__ == "__main__":
    main()
