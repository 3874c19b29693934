"""How the operations' results read on a terminal (rich tables and progress bars).

Every value from the data goes into a table as `terminal.plain(...)` (never markup,
control characters visible); styles come from `Text` objects, not markup strings.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from enrichment_assets.cli.operations.bulk import BulkResult
from enrichment_assets.cli.operations.status_listing import StatusListing
from enrichment_assets.terminal import json_document, plain, visible

OUTCOME_STYLES = {"successful": "green", "failed": "red", "skipped": "yellow"}
STATUS_FIELDS = (
    "status",
    "partition",
    "record_index",
    "retry_count",
    "last_attempt",
    "last_error",
    "raw_stored_at",
    "enriched_at",
)


def progress_bar(console: Console, unit: str) -> Progress:
    """A bar for long commands, on stderr; none when stderr is not a terminal."""
    # Descriptions can name what the operator asked for (`exporting <what>`): not markup.
    return Progress(
        TextColumn("{task.description}", style="progress.description", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(visible(unit), markup=False),
        TimeElapsedColumn(),
        console=console,
        # Off a terminal a bar shows nothing, yet left a blank line before an error.
        disable=not console.is_terminal,
    )


def conversation_view(found: dict[str, Any]) -> RenderableType:
    """One conversation: its status fields, validation report, raw and enriched documents."""
    table = Table(show_header=False, title=plain(f"conversation {found['conversation_id']}"))
    for key in STATUS_FIELDS:
        if key in found:
            table.add_row(key, plain(found[key]))
    for issue in found["validation_errors"]:
        table.add_row(
            "validation", plain(f"{issue['rule']} at {issue['path']}: {issue['value']!r}")
        )
    for attempt in found.get("enrichment_attempts", []):
        confidence = attempt["confidence"]
        table.add_row(
            f"attempt {attempt['attempt']}",
            plain(
                f"{attempt['attempted_at']} {attempt['model']} ({attempt['reason']}): "
                + (f"confidence {confidence}" if confidence is not None else f"{attempt['error']}")
                + (" [current]" if attempt["current"] else "")
            ),
        )
    parts: list[RenderableType] = [table]
    for title, document in (
        ("raw document", found["raw"]),
        ("enriched document", found["enriched"]),
    ):
        parts.append(Text(title, style="bold"))
        parts.append(json_document(document) if document is not None else Text("  (none)"))
    return Group(*parts)


def listing_view(listing: StatusListing) -> RenderableType:
    """Counts per status, then one page of conversations."""
    scope = " and ".join(
        part
        for part in (
            f"partition {visible(listing.partition)}" if listing.partition else "",
            f"status {listing.status}" if listing.status else "",
        )
        if part
    )
    counts = Table(title=Text(f"conversations per status{' (' + scope + ')' if scope else ''}"))
    counts.add_column("status")
    counts.add_column("conversations", justify="right")
    for status, count in listing.counts.items():
        if count or listing.status is None:
            counts.add_row(status, str(count))
    counts.add_row("total", str(listing.total), style="bold")
    rows = Table(
        title=(
            f"rows {listing.offset + 1}-{listing.offset + len(listing.items)} of {listing.total}"
            if listing.items
            else "no rows on this page"
        )
    )
    for column in ("conversation_id", "partition", "status", "retry_count", "last_error"):
        rows.add_column(column, justify="right" if column == "retry_count" else "left")
    for item in listing.items:
        rows.add_row(
            plain(item["conversation_id"]),
            plain(item["partition"]),
            plain(item["status"]),
            plain(item["retry_count"]),
            plain(item["last_error"] or ""),
        )
    parts: list[RenderableType] = [counts, rows]
    shown = listing.offset + len(listing.items)
    if shown < listing.total:
        parts.append(Text(f"more: --offset {shown} (--limit {listing.limit} per page)"))
    return Group(*parts)


def bulk_view(result: BulkResult) -> RenderableType:
    """Per-item outcomes, then the totals."""
    items = Table(title=plain(f"bulk request {result.request_id}"))
    for column in ("conversation_id", "outcome", "error"):
        items.add_column(column)
    for item in result.items:
        style = OUTCOME_STYLES.get(item.outcome)
        error = item.error or (
            "completed; --force re-enriches it" if item.outcome == "skipped" else ""
        )
        items.add_row(plain(item.conversation_id), plain(item.outcome, style or ""), plain(error))
    summary = result.to_json()
    totals = (
        f"total {summary['total']}  successful {summary['successful']}  "
        f"failed {summary['failed']}  skipped {summary['skipped']}  "
        f"runs {len(result.runs)} (tag enrich/bulk_request={result.request_id})"
    )
    return Group(items, plain(totals))
