"""Packing items, in order, into groups bounded in count and in size: landed files into
batch partitions (`defs/automation/landing.py`), summary windows into enricher calls
(`summary_windows.py`)."""

from __future__ import annotations

from collections.abc import Iterator


def chunk_bounds(sizes: list[int], max_count: int, max_size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of consecutive groups of the items whose `sizes` are given, each of at
    most `max_count` items and `max_size` in all (an item bigger than that is a group of its
    own); no items: one empty group."""
    start, size = 0, 0
    for item, item_size in enumerate(sizes):
        if item > start and (item - start >= max_count or size + item_size > max_size):
            yield start, item
            start, size = item, 0
        size += item_size
    yield start, len(sizes)
