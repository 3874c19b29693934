"""Pipeline health across all partitions: metrics in DuckDB, levels against its thresholds.

The metrics come from `sql/pipeline_health.sql` (over every status file) and
`sql/pipeline_health_annotations.sql` (over every normalized file): DuckDB reads
the Parquet, nothing loads a partition into Python. The thresholds are the ones
of the system we replace (README, "Quality gates and health"); each metric's level is
`ok`, `warning` or `critical`. Used by the `pipeline_health` asset and by
`enrich report`, so both always agree.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb

from enrichment_assets.exports import verify_exports
from enrichment_assets.lake import Lake
from enrichment_assets.sql_files import load_sql

if TYPE_CHECKING:
    from collections.abc import Sequence

    from enrichment_assets.low_confidence import LowConfidenceRule
    from enrichment_assets.partition_retry import PartitionRetry

OK, WARNING, CRITICAL = "ok", "warning", "critical"


@dataclass(frozen=True)
class Threshold:
    """A health metric's limits; `higher_is_better` says which way is bad."""

    metric: str
    description: str
    higher_is_better: bool
    warning: float | None
    critical: float

    def level(self, value: float | None) -> str:
        if value is None:  # nothing to measure yet (no conversation): nothing is wrong
            return OK
        if self._worse(value, self.critical):
            return CRITICAL
        if self.warning is not None and self._worse(value, self.warning):
            return WARNING
        return OK

    def _worse(self, value: float, limit: float) -> bool:
        return value < limit if self.higher_is_better else value > limit

    def rule(self) -> str:
        sign = "<" if self.higher_is_better else ">"
        warning = f"warning {sign} {self.warning:g}, " if self.warning is not None else ""
        return f"{warning}critical {sign} {self.critical:g}"


THRESHOLDS = (
    Threshold("completeness_rate", "completed with every AI field, % of validated", True, 85, 70),
    Threshold("quality_score", "mean quality score (0-100)", True, 80, 60),
    Threshold("backlog", "conversations not yet completed nor failed", False, None, 1000),
    Threshold("failure_rate", "validation or normalization failures, % of all", False, None, 20),
    Threshold(
        "stranded_partitions",
        "registered partitions with records not yet final and no live run working on them",
        False,
        None,
        0,
    ),
    Threshold(
        "export_mismatches",
        "partitions whose export files do not hold exactly their completed conversations",
        False,
        None,
        0,
    ),
)


def _files(lake: Lake, layer: str) -> list[str]:
    return sorted(glob.glob(lake.layer_glob(layer)))


def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def _row(con: duckdb.DuckDBPyConnection, sql: str, parameters: dict[str, Any]) -> dict[str, Any]:
    cursor = con.execute(sql, parameters)
    columns = [d[0] for d in cursor.description]
    return dict(zip(columns, cursor.fetchone(), strict=True))


def _flagged_partitions(flagged: Sequence[PartitionRetry]) -> list[dict[str, Any]]:
    return [
        {"partition": e.partition, "reason": e.reason, "detail": e.detail, "tries": e.tries}
        for e in flagged
    ]


def _low_confidence(lake: Lake, rule: LowConfidenceRule) -> dict[str, Any]:
    from enrichment_assets.low_confidence import lake_summary

    return lake_summary(lake, rule)


def stranded_partitions(
    lake: Lake, unfinished: dict[str, int], active: set[str]
) -> list[dict[str, Any]]:
    """Registered partitions that hold unfinished records, or never produced any, while no
    run or command works on them: a run died or never started (`run_liveness`)."""
    stranded = []
    for partition in lake.registered_batches():
        if partition in active:
            continue
        if not lake.layer_path("status", partition).exists():
            stranded.append({"partition": partition, "detail": "registered, never ran"})
        elif unfinished.get(partition):
            stranded.append(
                {
                    "partition": partition,
                    "detail": f"{unfinished[partition]} record(s) not in a final status",
                }
            )
    return stranded


def pipeline_health(
    lake: Lake,
    active: set[str] | None = None,
    flagged: Sequence[PartitionRetry] = (),
    *,
    low_confidence: LowConfidenceRule,
) -> dict[str, Any]:
    """Every health metric, each threshold's level, and the partitions needing a person.

    `active`: the partitions a live run or command is working on (`run_liveness`); their
    unfinished records are pending work, anyone else's are stranded. `flagged`: the
    partitions out of retries (`retry_state.flagged_partitions` of the instance).
    `low_confidence`: the rule that says which annotations are asked again.
    """
    status, annotations = _query(lake)
    metrics = _metrics(lake, status, annotations, active or set(), flagged, low_confidence)
    levels = {t.metric: t.level(metrics[t.metric]) for t in THRESHOLDS}
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metrics": metrics,
        "levels": levels,
        "thresholds": {t.metric: t.rule() for t in THRESHOLDS},
        "overall": max(levels.values(), key=[OK, WARNING, CRITICAL].index, default=OK),
    }


def _query(lake: Lake) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row of `sql/pipeline_health.sql` over the status files and that of
    `sql/pipeline_health_annotations.sql` over the normalized ones ({} without files)."""
    status_files, normalized_files = _files(lake, "status"), _files(lake, "normalized")
    con = duckdb.connect()
    try:
        status = (
            _row(con, load_sql("pipeline_health"), {"status_files": status_files})
            if status_files
            else {}
        )
        annotations = (
            _row(
                con,
                load_sql("pipeline_health_annotations"),
                {"normalized_files": normalized_files, "status_files": status_files},
            )
            if normalized_files and status_files
            else {}
        )
    finally:
        con.close()
    return status, annotations


def _metrics(
    lake: Lake,
    status: dict[str, Any],
    annotations: dict[str, Any],
    active: set[str],
    flagged: Sequence[PartitionRetry],
    low_confidence: LowConfidenceRule,
) -> dict[str, Any]:
    """Every metric, from the two query rows, the export files and the registered batches."""
    conversations = status.get("conversations", 0)
    mismatches = verify_exports(lake, dict(status.get("completed_per_partition") or {}))
    stranded = stranded_partitions(lake, dict(status.get("unfinished_per_partition") or {}), active)
    quality = annotations.get("quality_score_mean")
    return {
        "conversations": conversations,
        "partitions": status.get("partitions", 0),
        "per_status": dict(status.get("per_status") or {}),
        "completeness_rate": _percent(annotations.get("complete", 0), status.get("validated", 0)),
        "backlog": status.get("backlog", 0),
        # Of the records that are conversations of their own (set-aside repeats are not).
        "failure_rate": _percent(
            status.get("failed", 0), conversations - status.get("set_aside", 0)
        ),
        "stranded_partitions": len(stranded),
        "stranded_partition_details": stranded,
        "export_mismatches": len(mismatches),
        "export_mismatch_details": [
            {"partition": m.partition, "detail": m.detail} for m in mismatches
        ],
        "quality_score": round(quality, 2) if quality is not None else None,
        "confidence_histogram": annotations.get("confidence_histogram") or [],
        "confidence_missing": annotations.get("confidence_missing", 0),
        "records_per_hour": _round(status.get("records_per_hour")),
        "hourly_processed": [
            {"hour": h["hour"].isoformat(), "conversations": h["conversations"]}
            for h in status.get("hourly") or []
        ],
        "seconds_to_enriched": {
            "p50": _round(status.get("seconds_to_enriched_p50")),
            "p95": _round(status.get("seconds_to_enriched_p95")),
        },
        "gate_blocked_partitions": status.get("gate_blocked_partitions") or [],
        "flagged_partitions": _flagged_partitions(flagged),
        # The low-confidence rule: due now, waiting for their age, out of attempts.
        "low_confidence": _low_confidence(lake, low_confidence),
    }


def _round(value: float | None) -> float | None:
    return round(float(value), 2) if value is not None else None
