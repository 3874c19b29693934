"""`enrich bulk`: re-enrich any number of conversations through scoped Dagster runs.

Each id is looked up in the status of every partition (one DuckDB query for the
whole list), then: a malformed id or an unknown one is a failed item, a
completed conversation is skipped unless forced, a quarantined one cannot be
enriched (failed), and the rest are grouped by partition and re-enriched by one
Dagster run per partition that processes only those ids (`runner.reenrich_conversations`,
tagged `enrich/bulk_request=<request id>`, so the request shows in the UI).
"""

from __future__ import annotations

import glob
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from dagster import DagsterInstance

from enrichment_assets.cli.operations import OperationError
from enrichment_assets.cli.runner import PartitionOutcome, reenrich_conversations
from enrichment_assets.lake import Lake

SUCCESSFUL, FAILED, SKIPPED = "successful", "failed", "skipped"


@dataclass
class BulkItem:
    """The outcome of one requested id (`error` says why when it failed)."""

    conversation_id: str
    outcome: str = SUCCESSFUL
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "outcome": self.outcome,
            "error": self.error,
        }


@dataclass
class BulkResult:
    request_id: str
    items: list[BulkItem]
    runs: list[PartitionOutcome] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for item in self.items if item.outcome == outcome)

    def to_json(self) -> dict[str, Any]:
        """The contract's shape: {total, successful, failed, skipped, items}."""
        return {
            "total": len(self.items),
            "successful": self.count(SUCCESSFUL),
            "failed": self.count(FAILED),
            "skipped": self.count(SKIPPED),
            "items": [item.to_json() for item in self.items],
        }


def read_ids(arguments: Iterable[str], from_file: Path | None) -> list[str]:
    """The ids of the command line and of `from_file` (whitespace or comma separated,
    `#` starts a comment), in order, each once."""
    ids = [a.strip() for a in arguments if a.strip()]
    if from_file is not None:
        try:
            text = from_file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise OperationError(f"{from_file}: cannot be read: {error}") from error
        for line in text.splitlines():
            ids.extend(token for token in line.split("#", 1)[0].replace(",", " ").split())
    return list(dict.fromkeys(ids))


def _canonical(candidate: str) -> str | None:
    try:
        return str(uuid.UUID(candidate))
    except ValueError:
        return None


def _latest_status(lake: Lake, ids: list[str]) -> dict[str, tuple[str, str]]:
    """{conversation_id: (partition, status)}: the latest status row of each id."""
    pattern = lake.layer_glob("status")
    if not ids or not glob.glob(pattern):
        return {}
    con = duckdb.connect()
    try:
        con.register("wanted", pl.DataFrame({"conversation_id": ids}).to_arrow())
        rows = con.execute(
            # Ids compare as UUIDs do: case-insensitively.
            "SELECT lower(s.conversation_id), s.partition, s.status::VARCHAR "
            "FROM read_parquet(?) AS s "
            "WHERE lower(s.conversation_id) IN (SELECT conversation_id FROM wanted) "
            "QUALIFY row_number() OVER (PARTITION BY lower(s.conversation_id) "
            "ORDER BY s.updated_at DESC, s.partition) = 1",
            [pattern],
        ).fetchall()
    finally:
        con.close()
    return {cid: (partition, status) for cid, partition, status in rows}


def _enrichment_errors(lake: Lake, partition: str, ids: list[str]) -> dict[str, str | None]:
    """{conversation_id: enrichment.error} as the re-enriched layer holds it now."""
    path = lake.layer_path("enriched", partition)
    if not path.exists():
        return {}
    frame = (
        pl.scan_parquet(path)
        .filter(pl.col("conversation_id").is_in(ids))
        .select("conversation_id", pl.col("enrichment").struct.field("error"))
        .collect()
    )
    return dict(frame.iter_rows())


def new_request_id() -> str:
    return f"bulk-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def bulk_reenrich(
    lake: Lake,
    instance: DagsterInstance,
    ids: list[str],
    *,
    force: bool = False,
    request_id: str | None = None,
    on_plan: Callable[[int], None] | None = None,
    on_run_done: Callable[[PartitionOutcome], None] | None = None,
) -> BulkResult:
    """Re-enrich `ids`; every id gets exactly one item, in the order given.

    `on_plan(n)` is told how many runs will happen, `on_run_done` after each.
    """
    request_id = request_id or new_request_id()
    items = [BulkItem(conversation_id=raw) for raw in ids]
    canonical = {item.conversation_id: _canonical(item.conversation_id) for item in items}
    found = _latest_status(lake, sorted({c for c in canonical.values() if c is not None}))
    scopes: dict[str, list[str]] = {}
    pending: dict[str, list[BulkItem]] = {}
    for item in items:
        cid = canonical[item.conversation_id]
        if cid is None:
            item.outcome, item.error = FAILED, "invalid_id: not a UUID"
        elif cid not in found:
            item.outcome, item.error = FAILED, "not_found: no conversation with this id"
        else:
            partition, status = found[cid]
            if status == "completed" and not force:
                item.outcome = SKIPPED
            elif status == "validation_failed":
                item.outcome, item.error = (
                    FAILED,
                    "validation_failed: quarantined, so it cannot be enriched; "
                    "see `enrich status ID` for its validation report",
                )
            else:
                if cid not in scopes.setdefault(partition, []):
                    scopes[partition].append(cid)
                pending.setdefault(partition, []).append(item)
    if on_plan is not None:
        on_plan(len(scopes))
    runs = reenrich_conversations(
        instance, lake, scopes, request_id=request_id, force=force, on_done=on_run_done
    )
    for run in runs:
        _settle(lake, run, pending[run.partition], canonical)
    return BulkResult(request_id=request_id, items=items, runs=runs)


def _settle(
    lake: Lake, run: PartitionOutcome, items: list[BulkItem], canonical: dict[str, str | None]
) -> None:
    """Each item of a partition's run: successful when it completed without an
    enrichment error, failed with the reason otherwise."""
    if not run.success:
        reason = f"gate failed ({', '.join(run.failed_checks)})" if run.failed_checks else run.error
        for item in items:
            item.outcome, item.error = FAILED, f"run_failed: {reason} (run {run.run_id})"
        return
    ids = [canonical[item.conversation_id] or "" for item in items]
    statuses = _latest_status(lake, ids)
    errors = _enrichment_errors(lake, run.partition, ids)
    for item, cid in zip(items, ids, strict=True):
        status = statuses.get(cid, (run.partition, "missing"))[1]
        if status != "completed":
            item.outcome, item.error = FAILED, f"{status}: see `enrich status {cid}`"
        elif errors.get(cid):
            item.outcome, item.error = FAILED, f"enrichment_error: {errors[cid]}"
        else:
            item.outcome, item.error = SUCCESSFUL, None
