"""Near-duplicate detection over 1,000,000 conversations: time, and clusters found vs planted.

    uv run python benchmarks/bench_near_duplicates.py [--conversations 1000000]

The corpus is generated here (not timed) into `benchmarks/out/near_duplicates-<n>.parquet`,
one row group of 50,000 conversations each: conversations of 4-20 messages of 20-80 words
(about 640 words, like the sample generator's), words drawn from a Zipf distribution over a
50,000-word vocabulary, so unrelated conversations share only common phrases, as real chats
do. 1 % of them are cluster originals; each gets 1-3 copies in the next row group with 2-5
words changed (one copy in ten unchanged), so clusters straddle chunks.

Timed, in the same run:
- floor: reading the texts and shingling them once (`shingle_hashes`, on every core as the
  detection does), the least any shingle-based method must do;
- `find_near_duplicates` (MinHash LSH with rensa), what the `training_dataset` asset runs.
Printed: both times, their ratio, the clusters where exactly one member was kept (found)
against those planted, the cluster members removed against the copies planted, and any
conversation removed that belongs to no cluster.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from enrichment_assets.dataset.near_duplicates import (
    NearDuplicateSettings,
    ahead,
    find_near_duplicates,
    shingle_hashes,
    workers,
)

OUT = Path(__file__).parent / "out"
CHUNK = 50_000
VOCABULARY = 50_000
SYLLABLES = [c + v for c in "bdfghklmnprstvz" for v in "aeiou"]


def vocabulary(rng: np.random.Generator) -> np.ndarray:
    """Pronounceable pseudo-words, 2-4 syllables, distinct."""
    words: set[str] = set()
    while len(words) < VOCABULARY:
        n = int(rng.integers(2, 5))
        words.add("".join(SYLLABLES[i] for i in rng.integers(0, len(SYLLABLES), n)))
    return np.array(sorted(words), dtype=object)


def _documents(
    rng: np.random.Generator, count: int
) -> tuple[np.ndarray, np.ndarray]:  # (flat word ids, offsets)
    messages = rng.integers(4, 21, count)
    words_per_doc = np.array([rng.integers(20, 81, m).sum() for m in messages])
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(words_per_doc, out=offsets[1:])
    ids = (rng.zipf(1.15, int(offsets[-1])) - 1) % VOCABULARY
    return ids.astype(np.int32), offsets


def _texts(words: pl.Series, ids: np.ndarray, offsets: np.ndarray) -> pa.Array:
    flat = words.gather(pl.Series(ids)).to_arrow().cast(pa.large_string())
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), flat)
    return pl.Series(lists).list.join(" ").to_arrow().cast(pa.large_string())


def generate(path: Path, conversations: int, seed: int = 7) -> None:
    """Write the corpus: `text` and `cluster` (-1: not planted) per conversation."""
    rng = np.random.default_rng(seed)
    words = pl.Series(vocabulary(rng), dtype=pl.String)
    schema = pa.schema([("text", pa.large_string()), ("cluster", pa.int64())])
    pending: list[tuple[np.ndarray, int]] = []  # copies due in this chunk
    next_cluster = 0
    written = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        while written < conversations:
            size = min(CHUNK, conversations - written)
            last = written + size >= conversations
            fresh = size - len(pending)
            ids, offsets = _documents(rng, fresh)
            docs = [ids[offsets[i] : offsets[i + 1]] for i in range(fresh)]
            clusters = np.full(fresh, -1, dtype=np.int64)
            copies: list[tuple[np.ndarray, int]] = []
            # The last chunk plants no originals: their copies would have no chunk to go to.
            for index in [] if last else rng.choice(fresh, size=fresh // 100, replace=False):
                clusters[index] = next_cluster
                for _ in range(int(rng.integers(1, 4))):
                    copy = docs[index].copy()
                    if rng.random() >= 0.1:
                        changed = rng.choice(len(copy), size=int(rng.integers(2, 6)), replace=False)
                        copy[changed] = rng.integers(0, VOCABULARY, len(changed))
                    copies.append((copy, next_cluster))
                next_cluster += 1
            docs += [d for d, _ in pending]
            clusters = np.concatenate([clusters, np.array([c for _, c in pending], np.int64)])
            order = rng.permutation(len(docs))
            docs = [docs[i] for i in order]
            clusters = clusters[order]
            all_offsets = np.zeros(len(docs) + 1, dtype=np.int64)
            np.cumsum([len(d) for d in docs], out=all_offsets[1:])
            texts = _texts(words, np.concatenate(docs), all_offsets)
            writer.write_table(pa.table({"text": texts, "cluster": clusters}, schema=schema))
            written += len(docs)
            pending = copies
            print(f"  generated {written:,} conversations", flush=True)


def text_chunks(path: Path, rows: int) -> Iterator[pl.Series]:
    """The texts in order, `rows` at a time (as the asset hands them over)."""
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=rows, columns=["text"]):
        yield pl.Series(batch.column("text"))


def jaccard(a: str, b: str, words: int = 3) -> float:
    def shingles(text: str) -> set[tuple[str, ...]]:
        tokens = text.split(" ")
        return {tuple(tokens[i : i + words]) for i in range(len(tokens))}

    first, second = shingles(a), shingles(b)
    return len(first & second) / len(first | second)


def below_threshold(
    path: Path, clusters: np.ndarray, keep: np.ndarray, missed: np.ndarray, threshold: float
) -> int:
    """Missed clusters whose kept members are all pairwise less similar than the threshold."""
    texts = pl.read_parquet(path, columns=["text"])["text"]
    count = 0
    for cluster in missed:
        kept = [texts[int(i)] for i in np.flatnonzero((clusters == cluster) & keep)]
        pairs = [(a, b) for i, a in enumerate(kept) for b in kept[i + 1 :]]
        count += all(jaccard(a, b) < threshold for a, b in pairs)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--threshold", type=float, default=0.8)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    path = OUT / f"near_duplicates-{args.conversations}.parquet"
    if not path.exists():
        print(f"generating {args.conversations:,} conversations into {path} (not timed)")
        generate(path, args.conversations)
    clusters = pl.read_parquet(path, columns=["cluster"])["cluster"].to_numpy()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    settings = NearDuplicateSettings(threshold=args.threshold)
    started, cpu = time.perf_counter(), time.process_time()
    chunks = settings.chunk_rows
    shingled = ahead(
        lambda t: shingle_hashes(t, settings.shingle_words), text_chunks(path, chunks), workers()
    )
    shingles = sum(len(hashes) for _, hashes in shingled)
    floor, floor_cpu = time.perf_counter() - started, time.process_time() - cpu

    started, cpu = time.perf_counter(), time.process_time()
    verdict = find_near_duplicates(lambda: text_chunks(path, chunks), settings)
    elapsed, elapsed_cpu = time.perf_counter() - started, time.process_time() - cpu

    planted = clusters >= 0
    kept_per_cluster = np.bincount(clusters[planted & verdict.keep], minlength=clusters.max() + 1)
    cluster_count = int(clusters.max()) + 1
    found = int((kept_per_cluster == 1).sum())
    members = np.bincount(clusters[planted], minlength=cluster_count)
    copies = int((members - 1).sum())
    removed_members = int((~verdict.keep & planted).sum())
    wrongly_removed = int((~verdict.keep & ~planted).sum())

    print(f"conversations: {len(clusters):,} ({shingles:,} shingles)")
    # CPU time (every thread) says what the work costs when other processes share the cores.
    print(f"floor (read + shingle once): {floor:.1f} s wall, {floor_cpu:.1f} s CPU")
    print(
        f"near-duplicate detection:    {elapsed:.1f} s wall, {elapsed_cpu:.1f} s CPU "
        f"({elapsed / floor:.2f}x the floor)"
    )
    print(f"  LSH candidates: {verdict.candidates:,}; removed: {verdict.removed:,}")
    print(f"clusters found: {found:,} of {cluster_count:,} planted ({found / cluster_count:.2%})")
    missed = np.flatnonzero(kept_per_cluster > 1)
    below = below_threshold(path, clusters, verdict.keep, missed, args.threshold)
    print(
        f"  of the {len(missed)} clusters with more than one member kept, {below} have kept "
        f"members whose exact similarity is below {args.threshold} (rightly kept)"
    )
    print(f"cluster members removed: {removed_members:,} (planted copies: {copies:,})")
    print(f"conversations removed that were no copy: {wrongly_removed:,}")
    print(f"target: <= 60 s on 2 cores -> {'met' if elapsed <= 60 else 'NOT met'}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
