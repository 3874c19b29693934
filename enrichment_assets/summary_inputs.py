"""Whether a summary day's inputs changed since its files were published: skip it when not.

A day's summaries depend on the day's messages only (windows tile the day), on the window
settings, the annotation code version, the code and the settings (`fingerprints.py`). The
fingerprint of a day hashes its rows in DuckDB (`sql/conversation_summaries_inputs.sql`):
every day asked for in one scan of the normalized layer. After the day's files are
published, `lake/summaries_published/<day>.json` keeps that fingerprint, the identity of
the files and the gate's outcome; a day whose fingerprint and files are unchanged is not
computed again, and its files are not rewritten (`enrich run`, the `stale_summaries`
sensor and the asset itself, as a run from the UI, all ask here).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from enrichment_assets.enrichers.code_version import enrichment_code_version
from enrichment_assets.enrichers.settings import LLMSettings
from enrichment_assets.fingerprints import PublishedRecord, fingerprint, unchanged_record
from enrichment_assets.lake import Lake
from enrichment_assets.sql_files import load_sql
from enrichment_assets.summary_windows import (
    SummaryWindows,
    register_normalized,
    summaries_export_path,
    summaries_path,
    summary_connection,
)


def record_path(lake: Lake, day: str) -> Path:
    """Beside the layer, not in it: `lake/summaries/` holds the days' Parquet files only."""
    return lake.data_dir / "lake" / "summaries_published" / f"{day}.json"


@dataclass(frozen=True)
class DayInputs:
    """The settings a day's summaries depend on, besides its rows: its fingerprint's."""

    windows: SummaryWindows
    llm: LLMSettings


def published_files(lake: Lake, day: str) -> dict[str, Path]:
    """The files a day's publication writes, by the names its record uses."""
    return {"lake": summaries_path(lake, day), "export": summaries_export_path(lake, day)}


def fingerprints_of_days(
    con: duckdb.DuckDBPyConnection,
    days: Iterable[str],
    config: SummaryWindows,
    settings: LLMSettings,
) -> dict[str, str]:
    """{day: fingerprint of its summaries' inputs} over the connection's `summary_messages`,
    every day in one scan."""
    wanted = sorted(set(days))
    code_version = enrichment_code_version(settings)
    rows = con.sql(load_sql("conversation_summaries_inputs"), params={"days": wanted})
    found = {day: [messages, rows_hash] for day, messages, rows_hash in rows.fetchall()}
    return {
        day: fingerprint(
            {
                "summary_day": day,
                "rows": found.get(day, [0, "0"]),
                "min_messages": config.min_messages,
                "window_hours": config.window_hours,
                "annotation_code_version": code_version,
            }
        )
        for day in wanted
    }


def day_fingerprints(
    lake: Lake, days: Iterable[str], config: SummaryWindows, settings: LLMSettings
) -> dict[str, str]:
    """{day: fingerprint} in these window and enricher settings, every day in one scan."""
    wanted = sorted(set(days))
    if not wanted:
        return {}
    con = summary_connection()
    try:
        register_normalized(con, lake.layer_glob("normalized"))
        return fingerprints_of_days(con, wanted, config, settings)
    finally:
        con.close()


def unchanged_day(lake: Lake, day: str, day_fingerprint: str) -> PublishedRecord | None:
    """The day's last publication when its inputs have this fingerprint and its files are
    still the ones written; else None."""
    files = published_files(lake, day)
    return unchanged_record(record_path(lake, day), day_fingerprint, files.__getitem__)


def changed_days(
    lake: Lake, days: Iterable[str], config: SummaryWindows, settings: LLMSettings
) -> dict[str, str]:
    """{day: fingerprint} of the days whose inputs changed since their last publication
    (or that never published), in these window and enricher settings."""
    prints = day_fingerprints(lake, days, config, settings)
    return {day: fp for day, fp in prints.items() if unchanged_day(lake, day, fp) is None}
