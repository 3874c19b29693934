"""Asset metadata that tells the operator what happened, shown in the Dagster UI."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
)

from enrichment_assets.fingerprints import PublishedRecord

PREVIEW_ROWS = 5
PREVIEW_CHARS = 120


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def preview(frame: pl.DataFrame, columns: list[str]) -> MetadataValue:
    """A small table of the first rows, for the asset's page in the UI."""
    head = frame.select([c for c in columns if c in frame.columns]).head(PREVIEW_ROWS)
    schema = TableSchema(columns=[TableColumn(name=c, type="string") for c in head.columns])
    records = [
        TableRecord({k: _cell(v) for k, v in row.items()}) for row in head.iter_rows(named=True)
    ]
    return MetadataValue.table(records=records, schema=schema)


def layer_table(path: Path, rows: int | None = None) -> dict[str, Any]:
    """Dagster's standard table metadata of a layer file: `dagster/row_count` and
    `dagster/column_schema` (each column with its Arrow type), read from the Parquet footer."""
    schema = pq.read_schema(path)
    return {
        "dagster/row_count": rows if rows is not None else pq.ParquetFile(path).metadata.num_rows,
        "dagster/column_schema": MetadataValue.table_schema(
            TableSchema(columns=[TableColumn(name=f.name, type=str(f.type)) for f in schema])
        ),
    }


def path_value(path: Path) -> MetadataValue:
    return MetadataValue.path(str(path.resolve()))


class ProgressLog:
    """Progress lines for a run's log, at most one every `every_seconds`.

    Each line is an event in the instance's storage (a database write), so a long
    step reports its progress at a steady pace rather than once per chunk.
    """

    def __init__(self, log: logging.Logger, every_seconds: float = 5.0) -> None:
        self._log = log
        self._every = every_seconds
        self._last = time.monotonic()

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self._log.info(message)
            self._last = now


def rows_conserved(
    check_name: str, upstream: tuple[str, int], *downstream: tuple[str, int]
) -> AssetCheckResult:
    """The row-conservation check of a layer (blocking): every row of the layer upstream is
    in exactly one of its outputs, so their counts add up to the upstream count."""
    name, rows = upstream
    return AssetCheckResult(
        check_name=check_name,
        passed=rows == sum(count for _, count in downstream),
        severity=AssetCheckSeverity.ERROR,
        metadata={name: rows, **dict(downstream)},
    )


def check_outcomes(results: list[AssetCheckResult]) -> list[dict[str, Any]]:
    """What a publication record keeps of its gate: name, passed, severity of each check."""
    return [
        {"check_name": r.check_name, "passed": r.passed, "severity": r.severity.value}
        for r in results
    ]


def unchanged_result(
    previous: PublishedRecord, asset_key: str, metadata: dict[str, Any]
) -> MaterializeResult:
    """The result of a build skipped because its inputs did not change: the last build's
    figures (then `metadata`) and its gate outcome, evaluated on the same inputs."""
    since = {"unchanged_since_run": previous.run_id}
    checks = [
        AssetCheckResult(
            check_name=check["check_name"],
            asset_key=asset_key,
            passed=bool(check["passed"]),
            severity=AssetCheckSeverity(check["severity"]),
            metadata={**since, "evaluated": "on the same inputs by that run"},
        )
        for check in previous.checks
    ]
    return MaterializeResult(
        metadata={
            **previous.metadata,
            **{
                key: MetadataValue.json(value)
                for key, value in previous.metadata.items()
                if isinstance(value, dict | list)
            },
            **since,
            "skipped": MetadataValue.text("inputs unchanged: files left as they were"),
            **metadata,
        },
        check_results=checks,
    )
