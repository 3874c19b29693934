"""Throughput and peak RSS of the `openai` enricher against the loopback server.

    uv run python benchmarks/bench_openai_enricher.py [--conversations 2000]
        [--latency 0.2] [--concurrency 32]

The bound is concurrency / latency requests per second (32 / 0.2 s = 160/s);
the goal is at least 90 % of it. The server runs in its own process (it is not
what we measure, and must not share our GIL). Same-run baseline: the raw async
SDK's typed `chat.completions.create` sending similar requests at the same
concurrency, with none of our machinery (cache keys, retries, validation,
frames). Client CPU per request is printed too: on a shared machine it is the
steadier figure (throughput falls when other processes take the CPUs).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `tests.llm_server`

import openai

from enrichment_assets.enrichers.annotation import chat_messages
from enrichment_assets.enrichers.cache import EnrichmentCache
from enrichment_assets.enrichers.openai import OpenAIEnricher
from tests.llm_fixtures import make_conversations
from tests.llm_server import Faults, LoopbackLLMServer


def _serve(latency_s: float, ready: multiprocessing.connection.Connection) -> None:
    with LoopbackLLMServer(Faults(latency_s=latency_s)) as server:
        ready.send(server.base_url)
        ready.recv()  # until the benchmark is done


async def _raw_sdk(base_url: str, texts: list[str], concurrency: int) -> None:
    pending = iter(texts)
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0) as client:

        async def worker() -> None:
            for text in pending:
                await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=chat_messages(text, "json_object"),
                    response_format={"type": "json_object"},
                )

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    bound = args.concurrency / args.latency
    conversations = make_conversations(args.conversations, topic="benchmark")

    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(args.latency, theirs), daemon=True
    )
    server.start()
    base_url = ours.recv()
    rss_before = _peak_rss_mb()
    try:
        texts = [f"user: Question {i} raw" for i in range(args.conversations)]
        started, cpu = time.perf_counter(), _cpu_s()
        asyncio.run(_raw_sdk(base_url, texts, args.concurrency))
        raw_rate = args.conversations / (time.perf_counter() - started)
        raw_cpu_ms = (_cpu_s() - cpu) / args.conversations * 1000

        with tempfile.TemporaryDirectory() as cache_dir:
            enricher = OpenAIEnricher(
                base_url=base_url,
                api_key="sk-bench",
                concurrency=args.concurrency,
                cache=EnrichmentCache(Path(cache_dir)),
            )
            started, cpu = time.perf_counter(), _cpu_s()
            annotations = enricher.annotate(conversations)
            elapsed = time.perf_counter() - started
            cpu_ms = (_cpu_s() - cpu) / args.conversations * 1000
            failed = annotations["error"].is_not_null().sum()

            started = time.perf_counter()
            enricher.annotate(conversations)  # a re-materialization: all cache hits
            cached_elapsed = time.perf_counter() - started
            cached_requests = enricher.stats.requests
    finally:
        ours.send("stop")
        server.join(timeout=10)

    rate = args.conversations / elapsed
    print(
        f"conversations={args.conversations} latency={args.latency}s "
        f"concurrency={args.concurrency} bound={bound:.0f} req/s"
    )
    print(
        f"typed SDK create : {raw_rate:7.1f} req/s = {raw_rate / bound:6.1%} of bound, "
        f"client CPU {raw_cpu_ms:.2f} ms/request"
    )
    print(
        f"OpenAIEnricher   : {rate:7.1f} req/s = {rate / bound:6.1%} of bound, "
        f"client CPU {cpu_ms:.2f} ms/request ({elapsed:.2f}s, {failed} failed) "
        f"{'OK' if rate >= 0.9 * bound else 'BELOW GOAL'}"
    )
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average     : {load} on {os.cpu_count()} CPUs (other processes share them)")
    print(f"cache re-run     : {cached_elapsed:.3f}s, {cached_requests} requests")
    print(f"peak RSS         : {_peak_rss_mb():.0f} MiB (before the runs: {rss_before:.0f} MiB)")


if __name__ == "__main__":
    main()
