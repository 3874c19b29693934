"""Near-duplicate conversations: MinHash LSH (`rensa`) over word shingles.

Texts come in the dataset's order, and a text is removed when it is at least `threshold`
similar (estimated Jaccard similarity of its word shingles) to a text *kept before it*: each
cluster of near-copies keeps its first member.

How 1,000,000 conversations fit in a minute on two cores:
1. shingles, set-based: Polars splits each text on spaces and hashes every word, numpy
   combines each word's hash with the next `shingle_words - 1` words' into one 64-bit
   shingle (the last words of a text make shorter shingles, so every text has some);
   chunks are shingled on every core at once;
2. signatures, in Rust: `rensa` builds two matrices of R-MinHash signatures (two seeds)
   from the flat shingle hashes, chunk by chunk, and its LSH index takes the first;
   the texts are read and shingled once;
3. candidates: the index flags every row that shares a band with any other row; unflagged
   rows are kept without another look (in real data, nearly all of them);
4. decisions, for the flagged rows only: their signatures of the second matrix are
   compared, in order, with those of the kept rows sharing one of its bands; a row
   agreeing with one of them in at least `threshold` of its positions is removed.
   The pairs are compared in bulk (numpy, on every core), on a few packed bits of each
   position first; only the rows with close pairs are decided in Python, a row at a time.

Steps 3 and 4 use independent signatures of the same shingles: a pair at exactly the
threshold is caught about 90 % of the time, a pair 0.05 above it practically always.
Results are deterministic for the same texts, settings and library versions.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
import rensa

# Combines a word's hash with its successors' into one shingle hash (odd: invertible mod 2^64).
_MIX = np.uint64(0x9E3779B97F4A7C15)
_WORD_HASH_SEED = 17
# The share of a chunk's rows that must be flagged for its decision signatures to be taken
# from the first pass (`_decide`); below it, reading those rows' texts again is cheaper.
DENSE_SHARE = 0.25


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
Matrix = rensa.RMinHashDigestMatrix
T = TypeVar("T")
R = TypeVar("R")


def ahead(function: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """`map(function, items)` in order, `workers` items at a time in threads: Polars and
    rensa release the GIL, so the chunks are shingled on every core while the caller builds
    the previous chunk's signatures. At most `workers` chunks are in memory at once."""
    with ThreadPoolExecutor(workers, thread_name_prefix="near-duplicates") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def shingle_hashes(texts: pl.Series, shingle_words: int) -> tuple[np.ndarray, np.ndarray]:
    """(row offsets, flat shingle hashes) of `texts`, both uint64: text i's shingles are
    `hashes[offsets[i]:offsets[i + 1]]`, one per word."""
    words = pl.DataFrame({"text": texts}).select(
        pl.col("text").str.split(" ").list.eval(pl.element().hash(seed=_WORD_HASH_SEED))
    )
    lists = words.to_series().to_arrow()
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    counts = np.diff(lists.offsets.to_numpy())
    offsets = np.zeros(len(counts) + 1, dtype=np.uint64)
    np.cumsum(counts, out=offsets[1:])
    word_hashes = lists.flatten().to_numpy()
    # Shingle i = word i's hash mixed with the next words' (0 past the end of its text).
    ends = offsets[1:].astype(np.int64)
    starts = offsets[:-1].astype(np.int64)
    shingles = word_hashes.copy()
    with np.errstate(over="ignore"):
        for k in range(1, shingle_words):
            following = np.zeros_like(word_hashes)
            following[:-k] = word_hashes[k:]
            for back in range(1, k + 1):
                last = ends - back
                following[last[last >= starts]] = 0
            shingles *= _MIX
            shingles ^= following
    return offsets, shingles


def find_near_duplicates(
    text_chunks: TextChunks, settings: NearDuplicateSettings | None = None
) -> NearDuplicates:
    """Which texts to keep. `text_chunks()` yields the texts in order, as Series of at most
    `chunk_rows` strings, the same chunks at each call. Each chunk's shingles give both
    signature matrices (the LSH flags' and the decisions'); where few rows of a chunk are
    flagged, `text_chunks()` is read a second time to sign just those again (`_decide`).
    Memory holds signatures, never all the texts."""
    settings = settings or NearDuplicateSettings()
    settings.check()
    lsh = rensa.RMinHashLSH(settings.threshold, settings.num_perm, settings.num_bands)
    flag_matrices: deque[Matrix] = deque()
    check_matrices: deque[Matrix] = deque()
    start = 0
    seeds = (settings.seed, check_seed(settings))
    for flags, checks in ahead(lambda t: _signatures(t, settings, seeds), text_chunks(), workers()):
        lsh.insert_matrix(flags, start_key=start)
        flag_matrices.append(flags)
        check_matrices.append(checks)
        start += flags.len()
    flagged = np.zeros(start, dtype=bool)
    position = 0
    while flag_matrices:  # each let go once queried
        flags = np.asarray(lsh.query_duplicate_flags_matrix(flag_matrices.popleft()), dtype=bool)
        flagged[position : position + len(flags)] = flags
        position += len(flags)
    del lsh
    keep = np.ones(start, dtype=bool)
    if flagged.any():
        keep[flagged] = _decide(text_chunks, check_matrices, flagged, settings)
    return NearDuplicates(keep=keep, candidates=int(flagged.sum()))


def _signatures(
    texts: pl.Series, settings: NearDuplicateSettings, seeds: tuple[int, ...]
) -> list[Matrix]:
    """The texts' signature matrix for each seed, from one shingling."""
    offsets, hashes = shingle_hashes(texts, settings.shingle_words)
    return [
        rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            hashes, offsets, settings.num_perm, seed
        )
        for seed in seeds
    ]


def workers() -> int:
    """Threads that shingle chunks side by side: one per CPU."""
    return max(1, os.cpu_count() or 1)


def _decide(
    text_chunks: TextChunks,
    check_matrices: deque[Matrix],
    flagged: np.ndarray,
    settings: NearDuplicateSettings,
) -> np.ndarray:
    """Keep flags of the flagged texts, in order: a text is removed when its check
    signature (an independent MinHash of its shingles, `check_seed`) agrees in at least
    `threshold` of its positions with that of a text kept before it sharing one of that
    signature's bands. Only these comparisons run in Python.

    rensa gives a matrix's signatures as Python lists, a whole chunk at a time (0.15 s for
    20,000 rows). A chunk with at least `DENSE_SHARE` of its rows flagged is read that way;
    the flagged texts of sparser chunks (in real data, all of them) are read, shingled and
    signed again instead. `check_matrices` ends empty."""
    sizes = [matrix.len() for matrix in check_matrices]
    starts = np.cumsum([0, *sizes]).tolist()
    rows = [np.flatnonzero(flagged[starts[i] : starts[i + 1]]) for i in range(len(sizes))]
    blocks: dict[int, np.ndarray] = {}
    for i in range(len(sizes)):
        checks = check_matrices.popleft()  # let go once read
        if len(rows[i]) and len(rows[i]) >= DENSE_SHARE * sizes[i]:
            blocks[i] = _rows(checks, settings)[rows[i]]
    sparse = {i for i in range(len(sizes)) if len(rows[i]) and i not in blocks}

    def sparse_texts() -> Iterator[pl.Series]:
        for i, texts in enumerate(text_chunks()):
            if i >= len(sizes) or len(texts) != sizes[i]:
                raise RuntimeError(f"near-duplicate texts: chunk {i} changed between reads")
            if i in sparse:
                yield texts.gather(rows[i])

    if sparse:
        seed = (check_seed(settings),)
        signed = ahead(lambda t: _signatures(t, settings, seed)[0], sparse_texts(), workers())
        for i, checks in zip(sorted(sparse), signed, strict=True):
            blocks[i] = _rows(checks, settings)
    matrix = np.concatenate([blocks[i] for i in sorted(blocks)])
    return _keep_first_of_each(matrix, _Buckets(matrix, settings.num_bands), settings.threshold)


def _rows(matrix: Matrix, settings: NearDuplicateSettings) -> np.ndarray:
    """The matrix's signatures as numpy, one row each."""
    return np.array(matrix.to_rows(), dtype=np.uint32).reshape(-1, settings.num_perm)


def check_seed(settings: NearDuplicateSettings) -> int:
    """The seed of the signatures the decisions compare: not the LSH flags' own, so that
    a pair's chance to be flagged and its estimated similarity are independent."""
    return (settings.seed + 0x5EED) % 2**32


class _Buckets:
    """The rows of each LSH band's buckets, as numpy arrays (a few bytes a row and band, not
    Python dicts of lists: those took 2 GB at 1,000,000 texts): sorted by their band key,
    stably, the rows before a row in its bucket are one slice of that order."""

    BLOCK_ROWS = 50_000  # band keys are computed this many rows at a time

    def __init__(self, signatures: np.ndarray, bands: int) -> None:
        rows = len(signatures)
        keys = (
            np.concatenate(
                [
                    band_keys(signatures[start : start + self.BLOCK_ROWS], bands)
                    for start in range(0, rows, self.BLOCK_ROWS)
                ]
            )
            if rows
            else np.zeros((0, bands), dtype=np.uint64)
        )
        self.order = np.zeros((bands, rows), dtype=np.int32)  # rows, bucket by bucket
        self.first = np.zeros((rows, bands), dtype=np.int32)  # where a row's bucket starts
        self.position = np.zeros((rows, bands), dtype=np.int32)  # where the row is
        every = np.arange(rows, dtype=np.int32)
        for band in range(bands):
            order = np.argsort(keys[:, band], kind="stable").astype(np.int32)
            ordered = keys[order, band]
            starts = np.ones(rows, dtype=bool)
            starts[1:] = ordered[1:] != ordered[:-1]
            self.order[band] = order
            self.first[order, band] = np.maximum.accumulate(np.where(starts, every, 0))
            self.position[order, band] = every

    def before(self, row: int) -> list[np.ndarray]:
        """For each band where it has any, the rows before `row` in its bucket."""
        return [
            self.order[band, first:position]
            for band, (first, position) in enumerate(
                zip(self.first[row].tolist(), self.position[row].tolist(), strict=True)
            )
            if position > first
        ]


def _keep_first_of_each(signatures: np.ndarray, buckets: _Buckets, threshold: float) -> np.ndarray:
    """In order, a row is kept unless it agrees in at least `threshold` of the positions
    with a row kept before it in one of its buckets.

    The pairs (a row, an earlier row of its bucket) are compared in bulk, `BLOCK_PAIRS` at a
    time in row order, each band's on its own thread (numpy lets go of the GIL): first on
    one low bit of each position, then two (`_close`), which can only overcount agreement,
    and the few pairs left on whole values. Then the block's rows are decided in order,
    each against its close pairs' earlier rows still kept. Templated texts give a
    thousand bucket-mates a row at 1,000,000 rows: a row at a time, that took 9 minutes."""
    keep = np.ones(len(signatures), dtype=bool)
    width = signatures.shape[1]
    need = next(agree for agree in range(width + 1) if agree / width >= threshold)
    packed = (_low_bits(signatures, 1), _low_bits(signatures, 2))
    lengths = np.ascontiguousarray((buckets.position - buckets.first).T)  # bands x rows
    ends = np.cumsum(lengths.sum(axis=0, dtype=np.int64))
    with ThreadPoolExecutor(workers(), thread_name_prefix="near-duplicates") as pool:
        start = 0
        while start < len(signatures):
            stop = max(start + 1, int(np.searchsorted(ends, ends[start] + BLOCK_PAIRS)))
            compare = partial(
                _close, packed, buckets, lengths, start=start, stop=stop, most_differ=width - need
            )
            found = [pair for pair in pool.map(compare, range(len(lengths))) if len(pair[0])]
            if found:
                rows, earlier = (np.concatenate(side) for side in zip(*found, strict=True))
                alive = keep[earlier]  # rows of earlier blocks are decided
                rows, earlier = rows[alive], earlier[alive]
                sure = (signatures[earlier] == signatures[rows]).sum(axis=1) >= need
                order = np.lexsort((earlier[sure], rows[sure]))
                for row, before in zip(
                    rows[sure][order].tolist(), earlier[sure][order].tolist(), strict=True
                ):
                    if keep[before]:
                        keep[row] = False
            start = stop
    return keep


BLOCK_PAIRS = 16_000_000  # (row, earlier row) pairs compared at once, all bands together


def _low_bits(signatures: np.ndarray, bits: int) -> np.ndarray:
    """The `bits` low bits of each position, packed `64 // bits` positions to a uint64 (words
    x rows; the last word padded with zeros, which never differ)."""
    per_word = 64 // bits
    rows, width = signatures.shape
    padded = np.zeros((rows, -(-width // per_word) * per_word), dtype=np.uint64)
    padded[:, :width] = signatures & ((1 << bits) - 1)
    shifts = np.arange(per_word, dtype=np.uint64) * np.uint64(bits)
    words = np.bitwise_or.reduce(padded.reshape(rows, -1, per_word) << shifts, axis=2)
    return np.ascontiguousarray(words.T)


def _close(
    packed: tuple[np.ndarray, np.ndarray],
    buckets: _Buckets,
    lengths: np.ndarray,
    band: int,
    start: int,
    stop: int,
    most_differ: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(row, earlier row) for the rows start..stop and the earlier rows of their bucket of
    `band` that may differ in at most `most_differ` positions: positions whose low bits
    differ differ, so these counts never exceed the true one."""
    length = lengths[band, start:stop]
    total = int(length.sum())
    if not total:
        return _NO_PAIRS
    rows = np.repeat(np.arange(start, stop, dtype=np.int32), length)
    # Row r's earlier rows are order[band, first:position]: one run of indexes per row.
    runs = buckets.first[start:stop, band] - (np.cumsum(length) - length).astype(np.int32)
    earlier = buckets.order[band][np.repeat(runs, length) + np.arange(total, dtype=np.int32)]
    one, two = packed
    # Counts of a uint8 add up to 255 at most: wider signatures count in uint16.
    count = np.uint8 if len(one) * 64 < 256 else np.uint16
    differ = np.bitwise_count(one[0][earlier] ^ np.repeat(one[0][start:stop], length))
    differ = differ.astype(count, copy=False)
    for word in one[1:]:
        differ += np.bitwise_count(word[earlier] ^ np.repeat(word[start:stop], length))
    hits = np.flatnonzero(differ <= most_differ)
    rows, earlier = rows[hits], earlier[hits]
    differ = np.zeros(len(hits), dtype=count)
    for word in two:
        either = word[earlier] ^ word[rows]
        differ += np.bitwise_count((either | (either >> np.uint64(1))) & _EVEN_BITS)
    hits = differ <= most_differ
    return rows[hits], earlier[hits]


_EVEN_BITS = np.uint64(0x5555555555555555)
_NO_PAIRS = (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32))


def band_keys(signatures: np.ndarray, bands: int) -> np.ndarray:
    """One 64-bit key per band of each signature (rows x bands): its values mixed. Two
    equal bands have equal keys; two different ones rarely do, and then only cost a
    comparison of whole signatures."""
    per_band = signatures.reshape(len(signatures), bands, -1).astype(np.uint64)
    keys = np.zeros(per_band.shape[:2], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in range(per_band.shape[2]):
            keys = (keys ^ per_band[:, :, column]) * _MIX
    return keys
