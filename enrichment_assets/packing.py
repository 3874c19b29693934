"""Packing items, in order, into groups bounded in count and in size: landed files into
batch partitions (`defs/automation/landing.py`), summary windows into enricher calls
(`summary_windows.py`)."""

from __future__ import annotations

from collections.abc import Iterator


def chunk_bounds(sizes: list[int], max_rows: int, max_items: int) -> Iterator[tuple[int, int]]:
    """(start, end) of consecutive chunks of rows, each of at most `max_rows` rows and
    `max_items` items in all (a row bigger than that is a chunk of its own); no rows: one
    empty chunk."""
    start, items = 0, 0
    for row, size in enumerate(sizes):
        if row > start and (row - start >= max_rows or items + size > max_items):
            yield start, row
            start, items = row, 0
        items += size
    yield start, len(sizes)
