"""Near-duplicate detection (rensa MinHash LSH) on generated conversations' texts."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import polars as pl
import pytest

from enrichment_assets.dataset import near_duplicates
from enrichment_assets.dataset.near_duplicates import (
    NearDuplicateSettings,
    find_near_duplicates,
    shingle_hashes,
)
from enrichment_assets.sample_data import generate_conversations

CHANGES = ("banana", "quantum", "velvet", "harbour", "lantern")


def texts_of(n: int, seed: int) -> list[str]:
    return [
        " ".join(m["content"] for m in record["messages"]).lower()  # type: ignore[index]
        for record in generate_conversations(n, seed=seed, defect_rate=0.0)
    ]


def random_texts(n: int, seed: int, words: int = 200) -> list[str]:
    """Unrelated texts: words drawn from a 5,000-word vocabulary."""
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(5000)}" for _ in range(words)) for _ in range(n)]


def changed(text: str, rng: random.Random, words: int) -> str:
    tokens = text.split(" ")
    for index in rng.sample(range(len(tokens)), words):
        tokens[index] = rng.choice(CHANGES)
    return " ".join(tokens)


def planted_corpus(seed: int = 1) -> tuple[list[str], list[int]]:
    """300 conversations, then copies of 30 of them (exact, or 1-4 words changed) mixed
    with 50 more conversations; the cluster of each text (-1: none)."""
    rng = random.Random(seed)
    originals = texts_of(350, seed)
    texts, clusters = originals[:300], [-1] * 300
    later = [(text, -1) for text in originals[300:]]
    for cluster, index in enumerate(rng.sample(range(300), 30)):
        clusters[index] = cluster
        for _ in range(rng.randint(1, 3)):
            copy = changed(texts[index], rng, rng.randint(0, 4))
            later.append((copy, cluster))
    rng.shuffle(later)
    texts += [text for text, _ in later]
    clusters += [cluster for _, cluster in later]
    return texts, clusters


def chunks(texts: list[str], size: int):
    return lambda: (pl.Series(texts[i : i + size]) for i in range(0, len(texts), size))


def test_keeps_the_first_conversation_of_each_cluster_across_chunks() -> None:
    texts, clusters = planted_corpus()
    # Chunks of 64: most copies land in another chunk than their original.
    verdict = find_near_duplicates(chunks(texts, 64))
    keep = verdict.keep
    members = [[i for i, c in enumerate(clusters) if c == cluster] for cluster in range(30)]
    for indexes in members:
        assert keep[indexes[0]], "the original (first in order) stays"
        assert not keep[indexes[1:]].any(), "every later copy goes"
    assert keep[np.array(clusters) == -1].all(), "no unrelated conversation is removed"
    assert verdict.removed == sum(len(m) - 1 for m in members)
    assert verdict.candidates >= verdict.removed


@pytest.mark.parametrize("dense_share", [0.0, near_duplicates.DENSE_SHARE, 2.0])
def test_decisions_are_the_same_from_kept_signatures_and_from_texts_read_again(
    dense_share: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk's decision signatures come from the first read when enough of its rows are
    flagged (generated conversations share phrases: nearly all are), else from its flagged
    texts read again (unrelated texts with one copy); with every chunk one way (0.0, 2.0)
    or each its own (the default), the verdicts are the same, and the texts are read a
    second time only when some chunk is sparse."""
    planted, clusters = planted_corpus(seed=3)
    unrelated = random_texts(256, seed=4)
    rng = random.Random(6)
    unrelated[200] = changed(unrelated[10], rng, 3)  # one copy among 64 unrelated texts
    texts = planted + unrelated
    reads = []

    def counted() -> Iterator[pl.Series]:
        reads.append(1)
        return chunks(texts, 64)()

    monkeypatch.setattr(near_duplicates, "DENSE_SHARE", dense_share)
    verdict = find_near_duplicates(counted)
    expected = [c == -1 or i == clusters.index(c) for i, c in enumerate(clusters)]
    expected += [i != 200 for i in range(len(unrelated))]
    assert verdict.keep.tolist() == expected
    assert len(reads) == (1 if dense_share == 0.0 else 2)


def test_the_threshold_decides_how_close_is_a_duplicate() -> None:
    rng = random.Random(5)
    originals = random_texts(40, seed=9)
    # One word in twelve changed: a quarter of the 3-word shingles differ (similarity ~0.6).
    edited = [changed(t, rng, 200 // 12) for t in originals]
    texts = originals + edited
    verdicts = {
        threshold: find_near_duplicates(
            chunks(texts, 1000), NearDuplicateSettings(threshold=threshold)
        )
        for threshold in (0.4, 0.8)
    }
    assert verdicts[0.4].removed == 40 and not verdicts[0.4].keep[40:].any()
    assert verdicts[0.8].removed == 0


def test_same_texts_same_verdict_and_short_texts_are_compared_too() -> None:
    texts, _ = planted_corpus(seed=2)
    texts += ["ok", "ok", "thanks a lot", "thanks a lot!"]
    first = find_near_duplicates(chunks(texts, 100))
    again = find_near_duplicates(chunks(texts, 7))  # other chunking, same answer
    assert np.array_equal(first.keep, again.keep)
    assert list(first.keep[-4:]) == [True, False, True, True]


def test_every_text_has_shingles_one_per_word() -> None:
    offsets, hashes = shingle_hashes(pl.Series(["a b c d", "hello", "x y"]), 3)
    assert offsets.tolist() == [0, 4, 5, 7]
    assert len(hashes) == 7 and len(set(hashes.tolist())) == 7
    # The same words in the same order give the same shingles, wherever they are.
    again = shingle_hashes(pl.Series(["zzz", "a b c d"]), 3)[1]
    assert again[1:].tolist() == hashes[:4].tolist()


def test_settings_out_of_range_are_refused_with_one_line() -> None:
    for settings, message in (
        (NearDuplicateSettings(threshold=0.0), "near_duplicate_threshold=0.0"),
        (NearDuplicateSettings(threshold=1.5), "near_duplicate_threshold=1.5"),
        (NearDuplicateSettings(num_perm=100), "num_perm=100"),
    ):
        with pytest.raises(ValueError, match=message):
            find_near_duplicates(chunks(["a"], 1), settings)


def reference_keep(signatures: np.ndarray, bands: int, threshold: float) -> np.ndarray:
    """The decision rule itself, a pair at a time: a row goes when it agrees in at least
    `threshold` of the positions with a row kept before it that shares one of its bands."""
    keys = near_duplicates.band_keys(signatures, bands)
    width = signatures.shape[1]
    keep = np.ones(len(signatures), dtype=bool)
    for row in range(len(signatures)):
        for before in range(row):
            if (
                keep[before]
                and (keys[before] == keys[row]).any()
                and (signatures[before] == signatures[row]).sum() / width >= threshold
            ):
                keep[row] = False
                break
    return keep


@pytest.mark.parametrize(("width", "bands"), [(128, 16), (48, 6), (16, 2), (320, 40)])
def test_the_bulk_decisions_follow_the_rule_a_pair_at_a_time(
    width: int, bands: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows made from a few templates, each position taken from its template with
    probability 0.8 to 0.97 (else random): big buckets, pairs on both sides of the
    threshold, and chains (a row close only to a removed row stays). Blocks of 500 pairs,
    so that rows are decided against earlier blocks' verdicts too; widths that fill no
    whole word of packed bits, and one over 255 positions."""
    monkeypatch.setattr(near_duplicates, "BLOCK_PAIRS", 500)
    rng = np.random.default_rng(width)
    templates = rng.integers(0, 2**32, (5, width), dtype=np.uint64).astype(np.uint32)
    rows = 600
    signatures = templates[rng.integers(0, 5, rows)]
    keep_template = rng.random((rows, width)) < rng.uniform(0.8, 0.97, (rows, 1))
    noise = rng.integers(0, 2**32, (rows, width), dtype=np.uint64).astype(np.uint32)
    signatures = np.where(keep_template, signatures, noise)
    buckets = near_duplicates._Buckets(signatures, bands)
    keep = near_duplicates._keep_first_of_each(signatures, buckets, 0.8)
    expected = reference_keep(signatures, bands, 0.8)
    assert 0 < (~expected).sum() < rows - 5, "some rows go, some close ones stay"
    assert keep.tolist() == expected.tolist()
