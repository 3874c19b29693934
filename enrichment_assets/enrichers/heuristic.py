"""The `heuristic` enricher: offline, deterministic annotations computed set-based in DuckDB.

No key, no network: an extractive summary, keyword topics, lexicon sentiment and tone, a
keyword label and a structural quality score. The rules live in `sql/heuristic_*.sql`, the
word lists in `enrichment_assets/seeds/lexicon/`; this module loads the lexicons, hands the
frame to an in-memory DuckDB and binds the thresholds of `HeuristicRules`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from enrichment_assets.enrichers.base import LABELS, conform_annotations, empty_annotations
from enrichment_assets.sql_files import load_sql

# Bump when a rule changes meaning; lexicon, SQL and threshold edits change the digest
# appended to it (see `HeuristicEnricher.prompt_version`) without anyone having to remember.
RULES_VERSION = "heuristic-v1"

# Shorter words can never match: the tokenizer never extracts them.
MIN_LEXICON_WORD_CHARS = 3

# A token is a maximal run of Unicode letters (of the lower-cased text) with at least
# MIN_LEXICON_WORD_CHARS letters; digits, punctuation, emoji and apostrophes split
# ("don't" -> "don", "t", and "t" is too short). Extracted in Polars, which does it in
# about half the time of DuckDB's regexp_extract_all; sql/heuristic_lexicon_hits.sql and
# sql/heuristic_topic_word_counts.sql take the tokens (`heuristic_message_tokens`) from there.
TOKEN_PATTERN = rf"\p{{L}}{{{MIN_LEXICON_WORD_CHARS},}}"

LEXICON_DIR = Path(__file__).resolve().parents[1] / "seeds" / "lexicon"

# The SQL files, in the order they run, each with the `HeuristicRules` it binds; the last
# one is the query whose rows are the annotations.
SQL_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("heuristic_messages", ()),
    ("heuristic_lexicon", ()),
    ("heuristic_first_sentence", ()),
    ("heuristic_lexicon_hits", ()),
    ("heuristic_topic_word_counts", ("topic_min_chars",)),
    (
        "heuristic_annotations",
        (
            "summary_max_chars",
            "topic_count",
            "tone_threshold",
            "mixed_spread",
            "label_count",
            "short_reply_chars",
            "target_reply_chars",
            "target_distinct_ratio",
        ),
    ),
)


@dataclass(frozen=True)
class HeuristicRules:
    """The thresholds bound into `sql/heuristic_annotations.sql` (documented there)."""

    summary_max_chars: int = 280
    topic_count: int = 5
    topic_min_chars: int = 4
    tone_threshold: float = 0.15
    mixed_spread: float = 0.8
    short_reply_chars: int = 20
    target_reply_chars: float = 200.0
    target_distinct_ratio: float = 0.5


@dataclass(frozen=True)
class Lexicons:
    """The word lists, as frames ready to register with DuckDB."""

    sentiment: pl.DataFrame  # word, score_milli (score in thousandths, for exact sums)
    stopwords: pl.DataFrame  # word
    label_keywords: pl.DataFrame  # label, keyword

    @classmethod
    def load(cls, directory: Path = LEXICON_DIR) -> Lexicons:
        sentiment = pl.read_csv(
            directory / "sentiment.csv", schema={"word": pl.String(), "score": pl.Float64()}
        )
        out_of_range = sentiment.filter(~pl.col("score").is_between(-1.0, 1.0))
        if out_of_range.height:
            raise ValueError(
                f"{directory / 'sentiment.csv'}: scores must lie in [-1, 1], "
                f"got {out_of_range.rows()[:3]}"
            )
        label_keywords = pl.read_csv(
            directory / "label_keywords.csv",
            schema={"label": pl.String(), "keyword": pl.String()},
        )
        unknown = set(label_keywords["label"]) - set(LABELS)
        if unknown:
            raise ValueError(
                f"{directory / 'label_keywords.csv'}: unknown labels {sorted(unknown)}"
            )
        too_short = [
            word
            for word in (*sentiment["word"], *label_keywords["keyword"])
            if len(word) < MIN_LEXICON_WORD_CHARS
        ]
        if too_short:
            raise ValueError(
                f"{directory}: lexicon words need at least {MIN_LEXICON_WORD_CHARS} letters, "
                f"got {too_short[:5]}"
            )
        stopwords = (directory / "stopwords.txt").read_text(encoding="utf-8").split()
        return cls(
            sentiment=sentiment.select(
                pl.col("word").str.to_lowercase(),
                (pl.col("score") * 1000).round().cast(pl.Int64()).alias("score_milli"),
            ).unique("word", keep="first", maintain_order=True),
            stopwords=pl.DataFrame({"word": sorted({w.lower() for w in stopwords})}),
            label_keywords=label_keywords.select(
                pl.col("label"), pl.col("keyword").str.to_lowercase()
            ).unique(maintain_order=True),
        )

    def digest(self) -> str:
        """A content hash of the word lists, part of the prompt version."""
        h = hashlib.sha256()
        for frame in (self.sentiment, self.stopwords, self.label_keywords):
            h.update(frame.write_csv().encode())
        return h.hexdigest()


def message_tokens(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """(conv_ord, msg_idx, token): every token of `heuristic_messages`, in order."""
    messages = con.sql("SELECT conv_ord, msg_idx, content FROM heuristic_messages").pl()
    return (
        messages.lazy()
        .select(
            "conv_ord",
            "msg_idx",
            pl.col("content").str.to_lowercase().str.extract_all(TOKEN_PATTERN).alias("token"),
        )
        .explode("token")
        .drop_nulls("token")
        .collect()
    )


@dataclass
class HeuristicEnricher:
    """Deterministic offline enricher; satisfies `enrichers.base.Enricher`."""

    rules: HeuristicRules = field(default_factory=HeuristicRules)
    lexicons: Lexicons = field(default_factory=Lexicons.load)
    name: str = field(default="heuristic", init=False)
    # Each `annotate` has its own DuckDB connection and no other state: two chunks at once
    # keep both cores busy through each one's single-threaded steps.
    concurrent_chunks: int = field(default=2, init=False)
    # `heuristic-v1+<digest>`, the digest covering the SQL, the lexicons and the rules.
    prompt_version: str = field(init=False)

    def __post_init__(self) -> None:
        h = hashlib.sha256(TOKEN_PATTERN.encode())
        for step, _ in SQL_STEPS:
            h.update(load_sql(step).encode())
        h.update(self.lexicons.digest().encode())
        h.update(repr(sorted(asdict(self.rules).items())).encode())
        self.prompt_version = f"{RULES_VERSION}+{h.hexdigest()[:8]}"

    def annotate(self, conversations: pl.DataFrame) -> pl.DataFrame:
        """One annotation row per input row, in input order (ANNOTATION_SCHEMA)."""
        missing = {"conversation_id", "messages"} - set(conversations.columns)
        if missing:
            raise ValueError(f"heuristic enricher: input frame lacks columns {sorted(missing)}")
        if conversations.height == 0:
            return empty_annotations()

        parameters = {**asdict(self.rules), "label_count": len(LABELS)}
        with duckdb.connect() as con:
            con.register(
                "heuristic_input",
                conversations.select("conversation_id", "messages").with_row_index("conv_ord"),
            )
            con.register("sentiment_lexicon", self.lexicons.sentiment)
            con.register("stopwords", self.lexicons.stopwords)
            con.register("label_keywords", self.lexicons.label_keywords)
            con.register(
                "labels",
                pl.DataFrame({"label": list(LABELS), "label_rank": range(len(LABELS))}),
            )
            *setup, (query, query_parameters) = SQL_STEPS
            for step, step_parameters in setup:
                if step == "heuristic_lexicon_hits":
                    con.register("heuristic_message_tokens", message_tokens(con))
                con.execute(load_sql(step), {name: parameters[name] for name in step_parameters})
            annotations = con.sql(
                load_sql(query), params={name: parameters[name] for name in query_parameters}
            ).pl()

        return conform_annotations(
            annotations.with_columns(
                enricher=pl.lit(self.name),
                prompt_version=pl.lit(self.prompt_version),
                cached=pl.lit(False),
            )
        )
