"""LLM spend: the estimate against the actual cost, and the requests each scenario sends.

    uv run python benchmarks/bench_llm_spend.py [--conversations 300] [--concurrency 8]

On generated sample conversations (`sample_data`, 4-20 messages of ~300 characters),
against the loopback server (its token counts follow the same chars/4 rule as
ours, so the prompt figure checks the arithmetic; a real tokenizer differs by up to
±25 %), it prints:
- the estimate against the actual cost of an unlimited run (ratio);
- a budget at half the estimate: the refusal (`run_budget`, as the enriched asset calls
  it before sending) and the requests sent (must be 0);
- a budget at half the actual cost, with the provider billing 4x the estimate: requests
  sent, spend against the budget, overshoot in requests (at most one wave = concurrency);
- the time of the unlimited run against the same run with a budget that never binds
  (same-run baseline: what the per-request budget check costs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `tests.llm_server`

import polars as pl
from dagster import DagsterInstance, Failure

from enrichment_assets.defs.spend.llm_spend import run_budget
from enrichment_assets.enrichers.base import CONVERSATION_INPUT_SCHEMA
from enrichment_assets.enrichers.budget import BUDGET_EXHAUSTED, SpendBudget
from enrichment_assets.enrichers.openai import OpenAIEnricher
from enrichment_assets.enrichers.settings import DEFAULT_PRICES, LLMSettings
from enrichment_assets.sample_data import generate_conversations
from tests.llm_server import Faults, LoopbackLLMServer

PRICE = DEFAULT_PRICES["gpt-4o-mini"]


def conversations(n: int, salt: str) -> pl.DataFrame:
    rows = []
    for record in generate_conversations(n, defect_rate=0.0, mojibake_rate=0.0):
        assert isinstance(record, dict)
        rows.append(
            {
                "conversation_id": f"{salt}-{record['conversation_id']}",
                "messages": [
                    {"role": m["role"], "content": f"{salt} {m['content']}", "timestamp": None}
                    for m in record["messages"]
                ],
            }
        )
    return pl.DataFrame(rows, schema=CONVERSATION_INPUT_SCHEMA)


def enricher(server: LoopbackLLMServer, concurrency: int, budget: float | None) -> OpenAIEnricher:
    return OpenAIEnricher(
        base_url=server.base_url,
        api_key="sk-bench",
        concurrency=concurrency,
        price=PRICE,
        budget=SpendBudget(budget),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    n, c = args.conversations, args.concurrency

    with LoopbackLLMServer() as server:
        frame = conversations(n, "a")
        unlimited = enricher(server, c, None)
        estimate = unlimited.estimate(frame)
        unlimited.annotate(frame)
        actual = unlimited.stats.cost_usd or 0.0
        print(f"{n} conversations, concurrency {c}, {unlimited.model} list price")
        print(
            f"estimate ${estimate.cost_usd:.6f} vs actual ${actual:.6f}: "
            f"ratio {estimate.cost_usd / actual:.3f}"  # type: ignore[operator]
        )
        print(
            f"  prompt tokens: estimated {estimate.prompt_tokens:,}, actual "
            f"{unlimited.stats.prompt_tokens:,} "
            f"({estimate.prompt_tokens / unlimited.stats.prompt_tokens:.3f}); completion: "
            f"estimated {estimate.completion_tokens:,}, actual "
            f"{unlimited.stats.completion_tokens:,}"
        )
        print(f"  requests sent: {server.counters.chat_requests}")

        server.configure(Faults())
        settings = LLMSettings(enricher="openai", budget_usd=estimate.cost_usd / 2)  # type: ignore[operator]
        with DagsterInstance.ephemeral() as instance:
            try:
                run_budget(instance, settings, estimate)
                refusal = "not refused"
            except Failure as failure:
                refusal = (failure.description or "").split(";")[0]
        print(
            f"budget at half the estimate: {refusal}; requests sent: "
            f"{server.counters.chat_requests}"
        )

        server.configure(Faults(usage_scale=4.0))
        frame_c = conversations(n, "c")
        probe = enricher(server, c, None)
        probe.annotate(frame_c)
        real = probe.stats.cost_usd or 0.0
        server.configure(Faults(usage_scale=4.0))
        half = enricher(server, c, real / 2)
        rows = half.annotate(conversations(n, "d"))
        sent = server.counters.chat_requests
        stopped = rows.filter(pl.col("error") == BUDGET_EXHAUSTED).height
        per_request = real / n
        spent = half.budget.spent_usd
        print(
            f"budget at half the real cost (${real / 2:.6f}; provider bills 4x the estimate): "
            f"{sent} of {n} requests sent, {stopped} NULL with '{BUDGET_EXHAUSTED}', "
            f"spent ${spent:.6f} = {spent / (real / 2):.3f} x budget, "
            f"overshoot {(spent - real / 2) / per_request:.1f} requests (wave = {c})"
        )

        # Same-run baseline, interleaved and repeated (the machine is shared): best of 3.
        server.configure(Faults())
        timings: dict[str, list[float]] = {"none": [], "budget": []}
        for round_ in range(3):
            for name, limit in (("none", None), ("budget", 1e9)):
                frame = conversations(n, f"{name}{round_}")
                started = time.perf_counter()
                enricher(server, c, limit).annotate(frame)
                timings[name].append(time.perf_counter() - started)
        best = {name: min(values) for name, values in timings.items()}
        print(
            f"time with a budget that never binds vs none (best of 3): {best['budget']:.2f}s vs "
            f"{best['none']:.2f}s (ratio {best['budget'] / best['none']:.2f})"
        )


if __name__ == "__main__":
    main()
