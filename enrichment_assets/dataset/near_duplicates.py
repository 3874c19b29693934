"""Near-duplicate conversations: MinHash LSH (`rensa`) over word shingles.

Texts come in the dataset's order, and a text is removed when it is at least `threshold`
similar (estimated Jaccard similarity of its word shingles) to a text *kept before it*: each
cluster of near-copies keeps its first member.

How 1,000,000 conversations fit in a minute on two cores:
1. shingles, set-based in Polars: each text split on spaces, every word hashed, and each
   word's hash combined with the next `shingle_words - 1` words' into one 64-bit shingle
   (the last words of a text make shorter shingles, so every text has some);
2. signatures, in Rust: `rensa` builds a matrix of R-MinHash signatures from the flat
   shingle hashes, chunk by chunk, and its LSH index takes them all;
3. candidates: the index flags every row that shares a band with any other row; unflagged
   rows are kept without another look (in real data, nearly all of them);
4. decisions, for the flagged rows only: `rensa`'s deduplicator (LSH and a similarity check
   against the threshold) sees them in order and keeps those not similar to one kept before.

Steps 3 and 4 use independent signatures of the same shingles: a pair at exactly the
threshold is caught about 90 % of the time, a pair 0.05 above it practically always.
Results are deterministic for the same texts, settings and library versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import rensa

# Combines a word's hash with its successors' into one shingle hash (odd: invertible mod 2^64).
_MIX = 0x9E3779B97F4A7C15
_WORD_HASH_SEED = 17


@dataclass(frozen=True)
class NearDuplicateSettings:
    """How similar is similar, and how it is estimated."""

    threshold: float = 0.8  # estimated Jaccard similarity of the shingle sets
    shingle_words: int = 3
    num_perm: int = 128  # signature length
    seed: int = 42
    chunk_rows: int = 20_000  # texts shingled at once: bounds memory

    def check(self) -> None:
        """ValueError naming the setting when one is out of range."""
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"near_duplicate_threshold={self.threshold}: expected (0, 1]")
        if self.shingle_words < 1:
            raise ValueError(f"shingle_words={self.shingle_words}: expected at least 1")
        if self.num_perm < 16 or self.num_perm % 16:
            raise ValueError(f"num_perm={self.num_perm}: expected a multiple of 16")

    @property
    def num_bands(self) -> int:
        """LSH bands: a pair at the threshold becomes a candidate with probability >= 0.9."""
        per_128 = 8 if self.threshold >= 0.9 else 16 if self.threshold >= 0.75 else 32
        return max(1, per_128 * self.num_perm // 128)


@dataclass(frozen=True)
class NearDuplicates:
    """The verdict on each text, in input order."""

    keep: np.ndarray  # bool per text
    candidates: int  # texts the LSH index flagged (they shared a band with another)

    @property
    def removed(self) -> int:
        return int((~self.keep).sum())


TextChunks = Callable[[], Iterator[pl.Series]]


def shingle_hashes(texts: pl.Series, shingle_words: int) -> tuple[np.ndarray, np.ndarray]:
    """(row offsets, flat shingle hashes) of `texts`, both uint64: text i's shingles are
    `hashes[offsets[i]:offsets[i + 1]]`, one per word."""
    words = pl.DataFrame({"text": texts}).select(pl.col("text").str.split(" ").alias("word"))
    counts = words.get_column("word").list.len().cast(pl.UInt64).to_numpy()
    flat = (
        words.with_row_index("text")
        .explode("word")
        .select("text", pl.col("word").hash(seed=_WORD_HASH_SEED).alias("hash"))
    )
    mix = pl.lit(_MIX, dtype=pl.UInt64)
    shingle = pl.col("hash")
    for k in range(1, shingle_words):
        following = (
            pl.when(pl.col("text").shift(-k) == pl.col("text"))
            .then(pl.col("hash").shift(-k))
            .otherwise(pl.lit(0, dtype=pl.UInt64))
        )
        shingle = (shingle * mix) ^ following
    hashes = flat.select(shingle.alias("shingle")).get_column("shingle").to_numpy()
    offsets = np.zeros(len(counts) + 1, dtype=np.uint64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, hashes


def find_near_duplicates(
    text_chunks: TextChunks, settings: NearDuplicateSettings | None = None
) -> NearDuplicates:
    """Which texts to keep. `text_chunks()` yields the texts in order, as Series of at most
    `chunk_rows` strings; it is called twice (the second pass re-reads only to shingle the
    flagged texts again), so memory holds signatures, never all the texts."""
    settings = settings or NearDuplicateSettings()
    settings.check()
    lsh = rensa.RMinHashLSH(settings.threshold, settings.num_perm, settings.num_bands)
    matrices = []
    start = 0
    for texts in text_chunks():
        offsets, hashes = shingle_hashes(texts, settings.shingle_words)
        matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            hashes, offsets, settings.num_perm, settings.seed
        )
        lsh.insert_matrix(matrix, start_key=start)
        matrices.append(matrix)
        start += len(texts)
    flagged = np.zeros(start, dtype=bool)
    position = 0
    for matrix in matrices:
        flags = np.asarray(lsh.query_duplicate_flags_matrix(matrix), dtype=bool)
        flagged[position : position + len(flags)] = flags
        position += len(flags)
    del matrices, lsh
    keep = np.ones(start, dtype=bool)
    if flagged.any():
        keep[flagged] = _decide(text_chunks, flagged, settings)
    return NearDuplicates(keep=keep, candidates=int(flagged.sum()))


def _decide(
    text_chunks: TextChunks, flagged: np.ndarray, settings: NearDuplicateSettings
) -> np.ndarray:
    """Keep flags of the flagged texts, in order, from `rensa`'s deduplicator."""
    deduplicator = rensa.RMinHashDeduplicator(
        threshold=settings.threshold,
        num_perm=settings.num_perm,
        use_lsh=True,
        num_bands=settings.num_bands,
        seed=settings.seed,
    )
    verdicts: list[bool] = []
    start = 0
    for texts in text_chunks():
        rows = np.flatnonzero(flagged[start : start + len(texts)])
        if len(rows):
            offsets, hashes = shingle_hashes(texts.gather(rows), settings.shingle_words)
            # The deduplicator takes tokens as bytes: each 64-bit shingle hash as 8 bytes.
            tokens = hashes.view("S8")
            verdicts += deduplicator.add_pairs(
                (str(start + row), tokens[offsets[i] : offsets[i + 1]].tolist())
                for i, row in enumerate(rows)
            )
        start += len(texts)
    return np.asarray(verdicts, dtype=bool)
