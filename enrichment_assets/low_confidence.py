"""The low-confidence rule of the system we replace, and each conversation's attempts.

A conversation whose current confidence is below `below` (default 0.7) is asked
again once its last attempt is older than `after_hours` (default 24), up to
`max_attempts` attempts in all (default 5, the first included), by the escalation
model when one is set (`ENRICH_LLM_ESCALATION_MODEL`), else by the same model with
the cache bypassed. Every attempt is logged with its model and confidence
(`<lake>/enrichment_attempts/<partition>.parquet`, appended by the enriched asset);
the best answer (highest confidence; a failed attempt never replaces an answer) is
the current one. The `low_confidence` sensor requests the runs; `enrich status ID`
shows the attempts and the health report counts the conversations under the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from enrichment_assets.enrichers.budget import BUDGET_EXHAUSTED
from enrichment_assets.lake import Lake, atomic_path
from enrichment_assets.sql_files import load_sql

ATTEMPTS_LAYER = "enrichment_attempts"
ATTEMPTS_SCHEMA: dict[str, pl.DataType] = {
    "conversation_id": pl.String(),
    "attempt": pl.Int64(),
    "model": pl.String(),
    "confidence": pl.Float64(),
    "label": pl.String(),
    "error": pl.String(),
    "attempted_at": pl.Datetime("us", "UTC"),
    "reason": pl.String(),  # first | low_confidence | rerun
}
FIRST, LOW_CONFIDENCE, RERUN = "first", "low_confidence", "rerun"
# The annotation columns an attempt is made of (`record_attempts` takes these).
ATTEMPT_COLUMNS = ("conversation_id", "model", "confidence", "label", "error", "cached")


@dataclass(frozen=True)
class LowConfidenceRule:
    """When a conversation is asked again (see the module docstring)."""

    below: float = 0.7
    after_hours: float = 24.0
    max_attempts: int = 5
    escalation_model: str | None = None

    @classmethod
    def from_settings(cls, settings: object) -> LowConfidenceRule:
        """The rule of an `LLMSettings`."""
        return cls(
            below=settings.low_confidence_below,  # type: ignore[attr-defined]
            after_hours=settings.low_confidence_after_hours,  # type: ignore[attr-defined]
            max_attempts=settings.low_confidence_max_attempts,  # type: ignore[attr-defined]
            escalation_model=settings.escalation_model,  # type: ignore[attr-defined]
        )

    @classmethod
    def from_env(cls) -> LowConfidenceRule:
        from enrichment_assets.enrichers.settings import LLMSettings

        return cls.from_settings(LLMSettings.from_env())


def attempts_path(lake: Lake, partition: str) -> Path:
    return lake.layer_path(ATTEMPTS_LAYER, partition)


def read_attempts(lake: Lake, partition: str) -> pl.DataFrame:
    path = attempts_path(lake, partition)
    if not path.exists():
        return pl.DataFrame(schema=ATTEMPTS_SCHEMA)
    return pl.read_parquet(path).cast(ATTEMPTS_SCHEMA)  # type: ignore[arg-type]


def record_attempts(
    lake: Lake, partition: str, annotations: pl.DataFrame, *, reason: str, now: datetime
) -> int:
    """Append one attempt per row of `annotations` (ATTEMPT_COLUMNS of the rows made in
    this run); a cache hit counts only as a conversation's first attempt, a conversation
    the budget kept from being sent not at all. Returns the rows added."""
    previous = read_attempts(lake, partition)
    seen = previous.get_column("conversation_id").unique()
    fresh = annotations.filter(
        ~pl.col("cached").fill_null(False) | ~pl.col("conversation_id").is_in(seen.implode()),
        pl.col("error").fill_null("") != BUDGET_EXHAUSTED,  # not sent: not an attempt
    )
    if fresh.height == 0:
        return 0
    counts = previous.group_by("conversation_id").agg(pl.len().alias("before"))
    added = (
        fresh.join(counts, on="conversation_id", how="left")
        .with_columns(
            (pl.col("before").fill_null(0) + 1).alias("attempt"),
            pl.lit(now).alias("attempted_at"),
            pl.when(pl.col("before").is_null())
            .then(pl.lit(FIRST))
            .otherwise(pl.lit(reason))
            .alias("reason"),
        )
        .select(list(ATTEMPTS_SCHEMA))
        .cast(ATTEMPTS_SCHEMA)  # type: ignore[arg-type]
    )
    target = attempts_path(lake, partition)
    with atomic_path(target) as tmp:
        pl.concat([previous, added]).write_parquet(tmp)
    return added.height


def best_annotations(fresh: pl.DataFrame, previous: pl.DataFrame | None) -> pl.DataFrame:
    """Per conversation of `fresh`, the better of its fresh and previous annotation: the
    higher confidence wins, a tie keeps the previous one, a failure (NULL) never wins."""
    if previous is None or previous.height == 0:
        return fresh
    old = previous.join(fresh.select("conversation_id"), on="conversation_id", how="semi")
    both = pl.concat(
        [old.with_columns(pl.lit(0).alias("_new")), fresh.with_columns(pl.lit(1).alias("_new"))]
    )
    ranked = both.sort(
        [pl.col("confidence").is_null(), pl.col("confidence"), pl.col("_new")],
        descending=[False, True, False],
        nulls_last=True,
    )
    best = ranked.unique("conversation_id", keep="first", maintain_order=True)
    order = fresh.select("conversation_id").with_row_index("_order")
    return best.join(order, on="conversation_id").sort("_order").drop("_order", "_new")


@dataclass(frozen=True)
class Candidates:
    """The conversations of a partition under the rule."""

    frame: pl.DataFrame  # low_confidence_candidates.sql's columns

    @property
    def due(self) -> list[str]:
        ready = self.frame.filter(pl.col("due") & ~pl.col("exhausted"))
        return ready.get_column("conversation_id").to_list()

    @property
    def waiting(self) -> int:
        return self.frame.filter(~pl.col("due") & ~pl.col("exhausted")).height

    @property
    def exhausted(self) -> int:
        return self.frame.filter(pl.col("exhausted")).height


def candidates(
    lake: Lake, partition: str, rule: LowConfidenceRule, now: datetime | None = None
) -> Candidates:
    """The partition's conversations under the rule at `now` (in DuckDB)."""
    now = now or datetime.now(UTC)
    enriched = lake.layer_path("enriched", partition)
    if not enriched.exists():
        return Candidates(pl.DataFrame())
    current = pl.read_parquet(enriched, columns=["conversation_id", "enrichment"]).select(
        "conversation_id", pl.col("enrichment").struct.field("confidence").alias("confidence")
    )
    attempts = read_attempts(lake, partition).select("conversation_id", "attempted_at")
    fallback = datetime.fromtimestamp(enriched.stat().st_mtime, UTC)
    con = duckdb.connect()
    try:
        con.register("current", current.to_arrow())
        con.register("attempts", attempts.to_arrow())
        relation = con.sql(
            load_sql("low_confidence_candidates"),
            params={
                "below": rule.below,
                "max_attempts": rule.max_attempts,
                "due_before": now - timedelta(hours=rule.after_hours),
                "fallback_at": fallback,
            },
        )
        frame = pl.from_arrow(relation.to_arrow_table())
    finally:
        con.close()
    return Candidates(frame)  # type: ignore[arg-type]


def lake_summary(lake: Lake, rule: LowConfidenceRule, now: datetime | None = None) -> dict:
    """Counts over every partition, for the health report."""
    due = waiting = exhausted = reasked = 0
    for partition in lake.registered_batches():
        found = candidates(lake, partition, rule, now)
        if found.frame.height:
            due, waiting = due + len(found.due), waiting + found.waiting
            exhausted += found.exhausted
        attempts = read_attempts(lake, partition)
        if attempts.height:
            reasked += attempts.filter(pl.col("reason") == LOW_CONFIDENCE)[
                "conversation_id"
            ].n_unique()
    return {
        "below": rule.below,
        "due": due,
        "waiting": waiting,
        "out_of_attempts": exhausted,
        "reasked": reasked,
    }


def conversation_attempts(lake: Lake, partition: str, conversation_id: str) -> list[dict]:
    """One conversation's logged attempts, oldest first, the current (best) one marked."""
    attempts = read_attempts(lake, partition).filter(pl.col("conversation_id") == conversation_id)
    rows = attempts.sort("attempt").drop("conversation_id").to_dicts()
    scored = [r for r in rows if r["confidence"] is not None]
    best = max(scored, key=lambda r: r["confidence"], default=None)  # first of the best
    for row in rows:
        row["attempted_at"] = row["attempted_at"].isoformat() if row["attempted_at"] else None
        row["current"] = row is best
    return rows
