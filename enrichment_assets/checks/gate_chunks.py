"""A suite run over a partition in chunks, its results merged into one GX result.

GX validates an in-memory frame; a partition of a million rows made into one pandas
frame of Python strings costs gigabytes. So a layer file is validated in chunks of
at most `ENRICH_GATE_CHUNK_ROWS` rows (default 25,000), and the chunks' results are
merged into the result that one frame of every row would give: the same counts,
percentages and verdict of each expectation (the unexpected examples are the first
ones met). Each expectation is run on the chunks that can judge it:

- `rows`: a row-by-row expectation (a value in a set, not null, a regex, a pair of
  columns, a column set) on consecutive row ranges;
- `hash`: a uniqueness expectation on chunks that split the rows by a hash of the
  checked column(s), the repeats of a value in pairs, so that every repeat meets a
  twin in its chunk (`gate_frame._hash_frames`);
- `whole`: any other (an aggregate such as a column mean) on one frame of all rows,
  holding only the columns it reads.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from enrichment_assets import settings as env_settings

GATE_CHUNK_ROWS_ENV = "ENRICH_GATE_CHUNK_ROWS"
GATE_FRAME_ROWS_ENV = "ENRICH_GATE_FRAME_ROWS"
# 25,000: about 30 MiB less peak than 50,000 on a million-row partition, for about 30 %
# more of the gate's CPU time (GX's fixed cost per chunk).
DEFAULT_GATE_CHUNK_ROWS = 25_000
# A partition of up to 100,000 rows is judged on one frame: one read, one GX validation of
# the whole suite. Chunked, the same 100,000 rows were nine validations (four row ranges,
# four hash buckets, one frame of the aggregates' columns), each paying GX's fixed cost:
# on the four layers of 100,000 generated conversations 13.5 s of CPU against 7.6 s, for
# 150 MiB more at the gate's peak. Above it, the chunks keep memory bounded.
DEFAULT_GATE_FRAME_ROWS = 100_000

_CONDITION_NAMES = re.compile(r"`([^`]+)`|([A-Za-z_][\w.]*)")

ROWS = "rows"
HASH = "hash"
WHOLE = "whole"

# Expectations whose verdict on a row depends on that row only.
_ROW_BY_ROW_PREFIXES = ("expect_column_values_", "expect_column_value_lengths_")
_ROW_BY_ROW = {
    "expect_column_pair_values_a_to_be_greater_than_b",
    "expect_table_columns_to_match_set",
}
_UNIQUE = {"expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique"}


def gate_chunk_rows() -> int:
    """Rows of one gate chunk: ENRICH_GATE_CHUNK_ROWS, or 25,000."""
    return max(1, env_settings.whole_number(GATE_CHUNK_ROWS_ENV, DEFAULT_GATE_CHUNK_ROWS))


def gate_frame_rows() -> int:
    """The most rows a partition may have to be judged on one frame: ENRICH_GATE_FRAME_ROWS,
    or 100,000 (0: only a partition that fits in one chunk)."""
    return env_settings.whole_number(GATE_FRAME_ROWS_ENV, DEFAULT_GATE_FRAME_ROWS, minimum=0)


def frame_rows(rows: int) -> int | None:
    """Rows per frame for a partition of `rows`: None when it is judged on one frame (at
    most `gate_frame_rows()` rows, or one chunk), else the chunk size."""
    chunk = gate_chunk_rows()
    return None if rows <= max(chunk, gate_frame_rows()) else chunk


@dataclass(frozen=True)
class ChunkPlan:
    """How a group of expectations splits the rows: `rows`, `hash` on `keys`, or `whole`."""

    split: str
    keys: tuple[str, ...] = ()


def chunk_plan(expectation: dict[str, Any]) -> ChunkPlan:
    """The chunks an expectation (a suite JSON entry) can be judged on."""
    kind = expectation["type"]
    kwargs = expectation.get("kwargs", {})
    if kind in _UNIQUE:
        keys = kwargs.get("column_list") or [kwargs["column"]]
        return ChunkPlan(HASH, tuple(keys))
    if kind in _ROW_BY_ROW or kind.startswith(_ROW_BY_ROW_PREFIXES):
        return ChunkPlan(ROWS)
    return ChunkPlan(WHOLE)


def columns_read(kwargs_of_expectations: Iterable[dict[str, Any]]) -> set[str]:
    """Gate columns these expectations (and their row conditions) read."""
    columns: set[str] = set()
    for kwargs in kwargs_of_expectations:
        for key in ("column", "column_A", "column_B"):
            if key in kwargs:
                columns.add(kwargs[key])
        columns.update(kwargs.get("column_list") or [])
        # Every name a row condition mentions (`quoted` or bare); extras are harmless.
        for quoted, bare in _CONDITION_NAMES.findall(kwargs.get("row_condition") or ""):
            columns.add(quoted or bare)
    return columns


def _mostly_success(considered: int, unexpected: int, mostly: float) -> bool:
    """GX's verdict of a map expectation from its counts (`_mostly_success`)."""
    if considered == 0:
        return True
    return (considered - unexpected) / considered >= mostly


def _partial_counts(values: list[Any], limit: int) -> list[dict[str, Any]]:
    """GX's `partial_unexpected_counts`: the listed examples counted, most frequent first."""
    try:
        counted = Counter(values)
    except TypeError:  # unhashable values: GX leaves the counts out
        return []
    ranked = sorted(counted.items(), key=lambda item: item[1], reverse=True)
    return [{"value": value, "count": count} for value, count in ranked[:limit]]


def merge_map_results(results: list[dict[str, Any]], mostly: float, limit: int) -> dict[str, Any]:
    """One map expectation's `result` dicts (one per chunk) as one frame would give it."""
    element = sum(r.get("element_count") or 0 for r in results)
    unexpected = sum(r.get("unexpected_count") or 0 for r in results)
    merged: dict[str, Any] = {"element_count": element, "unexpected_count": unexpected}
    has_missing = any("missing_count" in r for r in results)
    missing = sum(r.get("missing_count") or 0 for r in results) if has_missing else None
    nonmissing = element - (missing or 0)
    total_percent = unexpected / element * 100 if element > 0 else None
    if missing is None:
        nonmissing_percent = total_percent
    else:
        nonmissing_percent = unexpected / nonmissing * 100 if nonmissing > 0 else None
    merged["unexpected_percent"] = nonmissing_percent
    partial = [v for r in results for v in r.get("partial_unexpected_list") or []][:limit]
    merged["partial_unexpected_list"] = partial
    if any("partial_unexpected_index_list" in r for r in results):
        merged["partial_unexpected_index_list"] = [
            i for r in results for i in r.get("partial_unexpected_index_list") or []
        ][:limit]
    if has_missing:
        merged["missing_count"] = missing
        merged["missing_percent"] = (missing or 0) / element * 100 if element > 0 else None
        merged["unexpected_percent_total"] = total_percent
        merged["unexpected_percent_nonmissing"] = nonmissing_percent
    if any("partial_unexpected_counts" in r for r in results):
        merged["partial_unexpected_counts"] = _partial_counts(partial, limit)
    merged["success"] = element == 0 or _mostly_success(nonmissing, unexpected, mostly)
    return merged


def merge_expectation_results(chunks: list[Any], limit: int) -> Any:
    """One expectation's `ExpectationValidationResult`s (one per chunk), merged."""
    first = chunks[0]
    if len(chunks) == 1:
        return first
    raised = next((c for c in chunks if (c.exception_info or {}).get("raised_exception")), None)
    if raised is not None:
        return raised
    details = [c.result or {} for c in chunks]
    if all("unexpected_count" in d for d in details):
        mostly = first.expectation_config.kwargs.get("mostly") or 1.0
        merged = merge_map_results(details, float(mostly), limit)
        first.success = merged.pop("success")
        first.result = merged
        return first
    # A table-level fact the same in every chunk (the column set): all must agree.
    first.success = all(c.success for c in chunks)
    return first


def merge_suite_results(
    ordered: list[Any], per_expectation: dict[int, list[Any]], limit: int
) -> tuple[list[Any], dict[str, Any]]:
    """The suite's results in suite order, and GX's statistics of them."""
    results = [merge_expectation_results(per_expectation[i], limit) for i in range(len(ordered))]
    evaluated = len(results)
    successful = sum(1 for r in results if r.success)
    statistics = {
        "evaluated_expectations": evaluated,
        "successful_expectations": successful,
        "unsuccessful_expectations": evaluated - successful,
        "success_percent": successful / evaluated * 100 if evaluated else None,
    }
    return results, statistics


def group_by_plan(expectations: Iterable[dict[str, Any]]) -> dict[ChunkPlan, list[int]]:
    """Positions of the suite's expectations, grouped by how their rows split."""
    groups: dict[ChunkPlan, list[int]] = {}
    for position, expectation in enumerate(expectations):
        groups.setdefault(chunk_plan(expectation), []).append(position)
    return groups
