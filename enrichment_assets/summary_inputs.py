"""Whether a summary day's inputs changed since its files were published: skip it when not.

A day's summaries depend on the day's messages only (windows tile the day), on the window
settings, the annotation code version, the code and the settings (`fingerprints.py`). The
fingerprint of a day hashes its rows in DuckDB (`sql/conversation_summaries_inputs.sql`):
every day asked for in one scan of the normalized layer. After the day's files are
published, `lake/summaries_published/<day>.json` keeps that fingerprint, the identity of
the files and the gate's outcome; a day whose fingerprint and files are unchanged is not
computed again, and its files are not rewritten (`enrich run`, the `stale_summaries`
sensor and the asset itself, as a run from the UI, all ask here).

Asking costs a scan of the normalized layer (1.1 s of an unchanged rerun at 100,000
conversations, 11 s at 1,000,000), so the answers are kept in `lake/summary_inputs/memo.json`
with the identity of every normalized and status file they were read from: while no
file of the layer was rewritten (every write of the lake is a rename of a new file), the
days of a batch and the fingerprint of a day are read from there, not scanned again.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson

from enrichment_assets.enrichers.code_version import enrichment_code_version
from enrichment_assets.enrichers.settings import LLMSettings
from enrichment_assets.fingerprints import (
    PublishedRecord,
    code_fingerprint,
    fingerprint,
    identity,
    unchanged_record,
)
from enrichment_assets.lake import Lake, write_bytes_atomic
from enrichment_assets.sql_files import load_sql
from enrichment_assets.summary_windows import (
    SummaryWindows,
    register_normalized,
    summaries_export_path,
    summaries_path,
    summary_connection,
)

MEMO_VERSION = 1


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
    """{day: fingerprint} in these window and enricher settings: those of the memo while
    the normalized layer is unchanged, the others in one scan."""
    wanted = sorted(set(days))
    if not wanted:
        return {}
    state = _layer_state(lake)
    key = fingerprint(
        {
            "layer": state,
            "min_messages": config.min_messages,
            "window_hours": config.window_hours,
            "annotation_code_version": enrichment_code_version(settings),
        }
    )
    memo = _read_memo(lake)
    known: dict[str, str] = memo.get("days", {}) if memo.get("days_key") == key else {}
    missing = [day for day in wanted if day not in known]
    if missing:
        con = summary_connection()
        try:
            register_normalized(con, lake.layer_glob("normalized"))
            scanned = fingerprints_of_days(con, missing, config, settings)
        finally:
            con.close()
        known = {**known, **scanned}
        if _layer_state(lake) == state:  # nothing was rewritten while it was read
            _update_memo(lake, lambda m: m | {"days_key": key, "days": known})
    return {day: known[day] for day in wanted}


def days_of_batches(
    lake: Lake, partitions: Iterable[str], scan: Callable[[list[str]], dict[str, list[str]]]
) -> list[str]:
    """The days on which these batches hold summarizable messages, sorted: a batch's from
    the memo while its normalized and status files are unchanged; `scan(batches)` gives
    {batch: days} for the others, all in one scan."""
    batches = sorted(set(partitions))
    keys = {batch: _batch_key(lake, batch) for batch in batches}
    known: dict[str, Any] = _read_memo(lake).get("batches", {})
    days = {b: known[b]["days"] for b in batches if known.get(b, {}).get("key") == keys[b]}
    stale = [batch for batch in batches if batch not in days]
    if stale:
        scanned = scan(stale)
        fresh = {b: scanned.get(b, []) for b in stale}
        days |= fresh
        kept = {  # the batches whose files were not rewritten while they were read
            b: {"key": keys[b], "days": fresh[b]} for b in stale if _batch_key(lake, b) == keys[b]
        }
        if kept:
            _update_memo(lake, lambda m: m | {"batches": {**m.get("batches", {}), **kept}})
    return sorted({day for batch in batches for day in days[batch]})


def memo_path(lake: Lake) -> Path:
    """Where the answers of the last scans are kept (see the module docstring)."""
    return lake.data_dir / "lake" / "summary_inputs" / "memo.json"


def _layer_state(lake: Lake) -> list[list[Any]]:
    """(file, identity) of every normalized file and its status file."""
    names = sorted(Path(path).stem for path in glob.glob(lake.layer_glob("normalized")))
    return [[name, *_identities(lake, name)] for name in names]


def _identities(lake: Lake, batch: str) -> list[list[int] | None]:
    return [identity(lake.layer_path(layer, batch)) for layer in ("normalized", "status")]


def _batch_key(lake: Lake, batch: str) -> list[Any]:
    return [*_identities(lake, batch), code_fingerprint()]


def _read_memo(lake: Lake) -> dict[str, Any]:
    try:
        memo = orjson.loads(memo_path(lake).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}
    return memo if isinstance(memo, dict) and memo.get("version") == MEMO_VERSION else {}


def _update_memo(lake: Lake, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Rewrite the memo (atomically: two writers leave one's answers, each valid)."""
    path = memo_path(lake)
    path.parent.mkdir(parents=True, exist_ok=True)
    memo = change(_read_memo(lake)) | {"version": MEMO_VERSION}
    write_bytes_atomic(path, orjson.dumps(memo))


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
