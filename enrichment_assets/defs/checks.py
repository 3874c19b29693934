"""Quality gates: each layer asset runs its GX suite on its own partition's output.

Every suite in `expectations/` splits by the expectations' own GX severity:
- `critical` expectations are the contract: the `gx_contract` check, ERROR and
  blocking, so a failure stops the partition's downstream assets in that run;
- `warning` expectations catch quality drift: the `gx_drift` check, WARN, never
  blocking.

Both checks are declared on the asset (`check_specs`) and evaluated inside its
materialization, on that partition's file only; an unpartitioned `@asset_check`
would load every partition. When the contract gate fails, the conversations keep
the status the layer gave them and their `last_error` says which gate stopped
them; re-materializing the fixed partition rewrites both.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    MetadataValue,
    PartitionsDefinition,
)

from enrichment_assets.checks.gate_chunks import ChunkPlan, frame_rows
from enrichment_assets.checks.gate_frame import gate_frames
from enrichment_assets.checks.gx_context import gate_context, prewarm_gate_context
from enrichment_assets.lake import Lake
from enrichment_assets.status import apply_changes, read_status

CONTRACT_CHECK = "gx_contract"
DRIFT_CHECK = "gx_drift"
# GX expectation severity -> the check it belongs to.
CHECK_OF_SEVERITY = {"critical": CONTRACT_CHECK, "warning": DRIFT_CHECK}
MAX_UNEXPECTED_VALUES = 20
# Every ASCII punctuation mark CommonMark lets a backslash make literal: no link, image,
# HTML tag, emphasis or code span can start from a value.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")

logger = logging.getLogger(__name__)


def gate_specs(
    asset_name: str, partitions_def: PartitionsDefinition | None = None
) -> list[AssetCheckSpec]:
    """The two GX checks of a layer asset, to pass to `@asset(check_specs=...)`.

    `partitions_def`: the asset's own, so that each result is recorded against the
    partition its run materialized (`partitioned_check_spec`).
    """
    return [
        partitioned_check_spec(
            CONTRACT_CHECK,
            asset=asset_name,
            partitions_def=partitions_def,
            blocking=True,
            description=(
                f"GX suite expectations/{asset_name}.json, critical expectations: the layer's "
                "contract. Fails the partition's gate; downstream assets do not run."
            ),
        ),
        partitioned_check_spec(
            DRIFT_CHECK,
            asset=asset_name,
            partitions_def=partitions_def,
            blocking=False,
            description=(
                f"GX suite expectations/{asset_name}.json, warning expectations: quality "
                "drift worth a look, never blocking."
            ),
        ),
    ]


def partitioned_check_spec(
    name: str,
    *,
    asset: str,
    partitions_def: PartitionsDefinition | None,
    blocking: bool,
    description: str,
) -> AssetCheckSpec:
    """An `AssetCheckSpec` whose results belong to the partition the run materialized.

    Dagster ties an `AssetCheckResult` emitted by a partitioned step to its partition
    only when the check's spec names the asset's `partitions_def`: the UI then shows the
    check's history per partition, and a failed gate on that partition's row. Dagster
    marks that argument a preview; its warning says nothing the operator can act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
        return AssetCheckSpec(
            name,
            asset=asset,
            blocking=blocking,
            description=description,
            partitions_def=partitions_def,
        )


@dataclass
class ExpectationOutcome:
    """One expectation's result, reduced to what an operator needs to see."""

    expectation: str
    column: str | None
    severity: str
    success: bool
    evaluated: int | None
    unexpected_count: int | None
    unexpected_percent: float | None
    unexpected_values: list[Any] = field(default_factory=list)
    observed_value: Any = None
    error: str | None = None

    def summary(self) -> str:
        where = f"{self.column}: " if self.column else ""
        if self.error:
            return f"{where}{self.expectation} raised {self.error}"
        if self.unexpected_count is not None:
            return f"{where}{self.expectation} ({self.unexpected_count} unexpected)"
        return f"{where}{self.expectation} (observed {self.observed_value})"


def markdown_literal(text: str) -> str:
    """`text` as Markdown that renders as exactly this text, on one line."""
    one_line = text.replace("\r", " ").replace("\n", " ")
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", one_line)


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)


def _outcome(result: Any) -> ExpectationOutcome:
    config = result.expectation_config
    details = result.result or {}
    exception = result.exception_info or {}
    raised = exception.get("raised_exception")
    return ExpectationOutcome(
        expectation=config.type,
        column=config.kwargs.get("column"),
        severity=config.severity.value,
        success=bool(result.success),
        evaluated=details.get("element_count"),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        unexpected_values=_json_safe(details.get("partial_unexpected_list") or [])[
            :MAX_UNEXPECTED_VALUES
        ],
        observed_value=_json_safe(details.get("observed_value")),
        error=(exception.get("exception_message") or "an exception") if raised else None,
    )


def _check_result(
    asset_name: str,
    check_name: str,
    outcomes: list[ExpectationOutcome],
    rows: int,
    docs_page: Path | None,
) -> AssetCheckResult:
    failed = [o for o in outcomes if not o.success]
    blocking = check_name == CONTRACT_CHECK
    metadata: dict[str, Any] = {
        "rows_evaluated": rows,
        "expectations": len(outcomes),
        "failed_expectations": len(failed),
        "unexpected_count": sum(o.unexpected_count or 0 for o in failed),
        "failures": MetadataValue.json(
            [
                {
                    "expectation": o.expectation,
                    "column": o.column,
                    "evaluated": o.evaluated,
                    "unexpected_count": o.unexpected_count,
                    "unexpected_percent": o.unexpected_percent,
                    "unexpected_values": o.unexpected_values,
                    "observed_value": o.observed_value,
                    "error": o.error,
                }
                for o in failed
            ]
        ),
        "suite": f"expectations/{asset_name}.json",
    }
    if failed:
        # The unexpected values are input (ids, text): literal text in the UI's Markdown.
        metadata["why"] = MetadataValue.md(
            "\n".join(
                "- "
                + markdown_literal(
                    f"{o.summary()}: {json.dumps(o.unexpected_values[:5], ensure_ascii=False)}"
                )
                for o in failed
            )
        )
    if docs_page is not None:
        metadata["data_docs"] = MetadataValue.path(str(docs_page))
    return AssetCheckResult(
        check_name=check_name,
        asset_key=asset_name,
        passed=not failed,
        severity=AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN,
        metadata=metadata,
    )


@dataclass
class GateReport:
    """What one gate run found: the checks to report and, when blocked, why."""

    check_results: list[AssetCheckResult]
    blocked_reason: str | None
    docs_page: Path | None


def validate_layer(lake: Lake, asset_name: str, parquet_path: Path, partition: str) -> GateReport:
    """Run `asset_name`'s suite on this partition's layer file (no status change)."""
    context = gate_context(lake.reports_dir.resolve())
    rows = pq.ParquetFile(parquet_path).metadata.num_rows
    chunk_rows = frame_rows(rows)

    def frames_of(plan: ChunkPlan, columns: set[str]) -> Iterator[Any]:
        return gate_frames(parquet_path, columns, plan, chunk_rows or max(rows, 1))

    parameters = {"partition_keys": [partition], "now": datetime.now(UTC)}
    result = context.validate(
        asset_name, frames_of, partition, parameters, one_frame=chunk_rows is None
    )
    try:
        docs_page = context.update_data_docs(result)
    except Exception:  # the report must not decide the gate: log it, keep the verdict
        logger.exception("Data Docs update failed for %s/%s", asset_name, partition)
        docs_page = None
    outcomes = [_outcome(r) for r in result.results]
    checks = [
        _check_result(
            asset_name,
            check,
            [o for o in outcomes if CHECK_OF_SEVERITY.get(o.severity) == check],
            rows,
            docs_page,
        )
        for check in (CONTRACT_CHECK, DRIFT_CHECK)
    ]
    failed = [o for o in outcomes if not o.success and o.severity == "critical"]
    reason = (
        f"gate {asset_name}:{CONTRACT_CHECK} failed: " + "; ".join(o.summary() for o in failed)
        if failed
        else None
    )
    return GateReport(check_results=checks, blocked_reason=reason, docs_page=docs_page)


def record_block(lake: Lake, batch: str, parquet_path: Path, reason: str) -> None:
    """Keep each conversation's status; record in `last_error` which gate stopped it."""
    indexes = pl.from_arrow(pq.read_table(parquet_path, columns=["record_index"]))
    current = read_status(lake, batch).join(indexes, on="record_index", how="semi")  # type: ignore[arg-type]
    changes = current.select(
        "record_index",
        "status",
        pl.when(pl.col("last_error").is_null())
        .then(pl.lit(reason))
        .otherwise(pl.concat_str(pl.col("last_error"), pl.lit("; "), pl.lit(reason)))
        .alias("last_error"),
    )
    apply_changes(lake, batch, changes, datetime.now(UTC))


def prewarm_gate(lake: Lake) -> None:
    """Start building the GX context `run_gate` needs (call it when a layer starts)."""
    prewarm_gate_context(lake.reports_dir.resolve())


def run_gate(
    lake: Lake, asset_name: str, parquet_path: Path, partition: str
) -> list[AssetCheckResult]:
    """Validate the partition's layer file; on a contract failure, record it in statuses.

    Returns the `gx_contract` and `gx_drift` check results for the asset's
    `MaterializeResult(check_results=...)`.
    """
    report = validate_layer(lake, asset_name, parquet_path, partition)
    if report.blocked_reason is not None:
        record_block(lake, partition, parquet_path, report.blocked_reason)
    return report.check_results
