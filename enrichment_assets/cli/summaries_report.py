"""The summaries part of `enrich report`: counts and days covered, by DuckDB over the lake."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import duckdb

from enrichment_assets.lake import Lake
from enrichment_assets.sql_files import load_sql

LAYER = "summaries"  # lake/summaries/<day>.parquet, written by `conversation_summaries`


def summaries_report(lake: Lake) -> dict[str, Any]:
    """{rows, users, days_materialized, days_with_summaries, first_day, last_day, per_day}.

    A day materialized with no window worth a summary still counts as covered.
    """
    pattern = lake.layer_glob(LAYER)
    days = sorted(Path(path).stem for path in glob.glob(pattern))
    per_day: list[dict[str, Any]] = []
    users = 0
    if days:
        con = duckdb.connect()
        try:
            relation = con.execute(load_sql("conversation_summaries_report"), [pattern])
            columns = [d[0] for d in relation.description]
            per_day = [dict(zip(columns, row, strict=True)) for row in relation.fetchall()]
            users = con.execute(
                "SELECT count(DISTINCT user_id) FROM read_parquet(?, union_by_name = true)",
                [pattern],
            ).fetchone()[0]
        finally:
            con.close()
    for row in per_day:
        generated = row.get("generated_at")
        row["generated_at"] = generated.isoformat() if generated is not None else None
    return {
        "rows": sum(row["summaries"] for row in per_day),
        "users": users,
        "days_materialized": len(days),
        "days_with_summaries": len(per_day),
        "first_day": days[0] if days else None,
        "last_day": days[-1] if days else None,
        "per_day": per_day,
    }


def summaries_line(report: dict[str, Any]) -> str:
    """One line for the text report."""
    if not report["days_materialized"]:
        return "summaries: none yet (materialize conversation_summaries for a day)"
    return (
        f"summaries: {report['rows']} for {report['users']} user(s) over "
        f"{report['days_materialized']} day(s) {report['first_day']}..{report['last_day']} "
        f"({report['days_with_summaries']} with summaries)"
    )
