"""The training dataset's lines, staged as one Parquet file before anything is published.

The steps, each counted (`REMOVAL_STEPS`):
1. the current version of every completed conversation of the selected partitions
   (`sql/training_dataset_candidates.sql`: status files, normalized layer, manifests);
2. filters, in this order: minimum quality score, minimum confidence, required annotations;
3. exact duplicates: the same normalized content hash as a row before it;
4. near-duplicates: MinHash LSH (`near_duplicates.py`) over the rows left;
5. a train/validation split by hash and line numbers (`sql/training_dataset_lines.sql`);
6. the lines staged in dataset order, with the provenance of each and, in the `export` PII
   mode, their messages redacted (`redaction.redact_messages`).

Dataset order is the order batches were registered, then record order: a batch landed later
never displaces a line kept before, and every step is deterministic, so the same lake and
settings stage the same lines.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import duckdb
import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from enrichment_assets.dataset.near_duplicates import NearDuplicateSettings, find_near_duplicates
from enrichment_assets.lake import Lake, atomic_path, write_bytes_atomic
from enrichment_assets.redaction import (
    DEFAULT_PHONE_REGION,
    PII_KINDS,
    PiiMode,
    redact_messages,
)
from enrichment_assets.sql_files import load_sql

FORMAT_VERSION = 1
ANNOTATIONS = (
    "summary",
    "topics",
    "emotional_tone",
    "sentiment",
    "label",
    "confidence",
    "quality_score",
)
REMOVAL_STEPS = (
    "below_min_quality_score",
    "below_min_confidence",
    "missing_annotations",
    "exact_duplicate",
    "near_duplicate",
)
# A dataset's name is a folder name under export/dataset/.
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LIBRARIES = ("duckdb", "polars", "rensa", "phonenumbers", "python-stdnum")

_MESSAGE = pa.struct(
    [
        pa.field("role", pa.large_string()),
        pa.field("content", pa.large_string()),
        pa.field("timestamp", pa.timestamp("us", tz="UTC")),
    ]
)
# The staged lines: the chat messages, and the provenance of each (the GX suite
# expectations/training_dataset.json checks this file before it is published).
STAGED_SCHEMA = pa.schema(
    [
        pa.field("split", pa.large_string()),
        pa.field("line", pa.int64()),
        pa.field("conversation_id", pa.large_string()),
        pa.field("partition", pa.large_string()),
        pa.field("record_index", pa.int64()),
        pa.field("source_file", pa.large_string()),
        pa.field("source_sha256", pa.large_string()),
        pa.field("landing_file", pa.large_string()),
        pa.field("position", pa.int64()),
        pa.field("record_sha256", pa.large_string()),
        pa.field("run_id", pa.large_string()),
        pa.field("enricher", pa.large_string()),
        pa.field("model", pa.large_string()),
        pa.field("prompt_version", pa.large_string()),
        pa.field("content_hash", pa.large_string()),
        pa.field("messages", pa.large_list(_MESSAGE)),
    ]
)


@dataclass(frozen=True)
class DatasetSpec:
    """What goes into one dataset, and how it is cut."""

    name: str = "default"
    partitions: tuple[str, ...] = ()  # empty: every partition of the lake
    min_quality_score: float | None = None
    min_confidence: float | None = None
    required_annotations: tuple[str, ...] = ()
    near_duplicates: NearDuplicateSettings = field(default_factory=NearDuplicateSettings)
    validation_fraction: float = 0.1
    split_seed: str = ""
    pii_mode: PiiMode = "egress"
    phone_region: str = DEFAULT_PHONE_REGION

    def check(self) -> None:
        """ValueError, one line naming the setting, when a setting is out of range."""
        if not DATASET_NAME.fullmatch(self.name):
            raise ValueError(
                f"name={self.name!r}: expected 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        unknown = sorted(set(self.required_annotations) - set(ANNOTATIONS))
        if unknown:
            raise ValueError(
                f"required_annotations: unknown {', '.join(unknown)}; "
                f"expected some of {', '.join(ANNOTATIONS)}"
            )
        if not 0.0 <= self.validation_fraction <= 1.0:
            raise ValueError(f"validation_fraction={self.validation_fraction}: expected [0, 1]")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence={self.min_confidence}: expected [0, 1]")
        self.near_duplicates.check()

    def settings(self) -> dict:
        """The filters and cuts, as the manifest records them."""
        return {
            "partitions": list(self.partitions) or "all",
            "min_quality_score": self.min_quality_score,
            "min_confidence": self.min_confidence,
            "required_annotations": sorted(self.required_annotations),
            "near_duplicates": {
                "threshold": self.near_duplicates.threshold,
                "shingle_words": self.near_duplicates.shingle_words,
                "num_perm": self.near_duplicates.num_perm,
                "num_bands": self.near_duplicates.num_bands,
                "seed": self.near_duplicates.seed,
            },
            "split": {"validation_fraction": self.validation_fraction, "seed": self.split_seed},
            "pii_mode": self.pii_mode,
        }


@dataclass(frozen=True)
class StagedDataset:
    """The staged lines and what the steps did, for the manifest and the asset's metadata."""

    path: Path
    partitions: list[str]
    counts: dict[str, int]  # completed, each removal step, kept, train, validation
    near_duplicate_candidates: int
    near_duplicates_reused: bool  # the last build's verdicts, on the same rows and settings
    annotation_sources: list[dict]  # {enricher, model, prompt_version, lines}
    redacted: dict[str, int] | None  # kind -> values replaced (export mode only)
    redacted_conversations: int

    @property
    def conserved(self) -> bool:
        """completed = every removal + train + validation."""
        removed = sum(self.counts[step] for step in REMOVAL_STEPS)
        return (
            self.counts["completed"] == removed + self.counts["train"] + self.counts["validation"]
        )


def library_versions() -> dict[str, str]:
    return {name: version(name) for name in LIBRARIES}


def code_version() -> str:
    """sha256 of the code that decides the dataset's lines (this package and the redaction):
    a new release of it is a new input, whatever else stayed the same."""
    import enrichment_assets.redaction as redaction

    digest = hashlib.sha256()
    sources = [*sorted(Path(__file__).parent.glob("*.py")), Path(redaction.__file__)]
    for source in sources:
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def dataset_partitions(lake: Lake, requested: tuple[str, ...] = ()) -> list[str]:
    """The partitions a dataset reads: those asked for (each must have its normalized layer
    and statuses), or every such partition of the lake, sorted."""
    available = {p.stem for p in (lake.data_dir / "lake" / "normalized").glob("*.parquet")} & {
        p.stem for p in (lake.data_dir / "lake" / "status").glob("*.parquet")
    }
    if not requested:
        return sorted(available)
    missing = sorted(set(requested) - available)
    if missing:
        raise ValueError(
            f"partitions without a normalized layer: {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    return sorted(set(requested))


def landed_files(lake: Lake, partitions: list[str]) -> pl.DataFrame:
    """(partition, source_file, source_sha256, landing_file, registered_at) from the batches'
    manifests: where each record's bytes are kept, relative to the data folder."""
    rows = []
    for partition in partitions:
        manifest = lake.load_manifest(partition)
        for entry in manifest.files:
            if entry.name is None:  # a file that could not be read: no bytes kept, no line
                continue
            stored = lake.stored_file(partition, entry).relative_to(lake.data_dir)
            rows.append(
                (
                    partition,
                    entry.source_path,
                    entry.sha256,
                    stored.as_posix(),
                    manifest.registered_at,
                )
            )
    return pl.DataFrame(
        rows,
        schema=["partition", "source_file", "source_sha256", "landing_file", "registered_at"],
        orient="row",
    )


def select_candidates(
    lake: Lake, partitions: list[str], spec: DatasetSpec, run_ids: Mapping[str, str]
) -> pl.DataFrame:
    """The completed conversations in dataset order, with `removed_by` for the filters and
    exact duplicates (`sql/training_dataset_candidates.sql`)."""
    if not partitions:
        return _empty_candidates()
    con = duckdb.connect()
    try:
        for layer in ("normalized", "status"):
            files = [str(lake.layer_path(layer, p)) for p in partitions]
            con.read_parquet(files, union_by_name=True).create_view(layer)
        runs = pl.DataFrame(
            {"partition": list(run_ids), "run_id": list(run_ids.values())},
            schema={"partition": pl.String, "run_id": pl.String},
        )
        con.register("landed_files", landed_files(lake, partitions))
        con.register("normalized_runs", runs)
        return con.sql(
            load_sql("training_dataset_candidates"),
            params={
                "min_quality_score": spec.min_quality_score,
                "min_confidence": spec.min_confidence,
                "required_annotations": list(spec.required_annotations),
            },
        ).pl()
    finally:
        con.close()


def _empty_candidates() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            name: pl.Int64 if name in ("record_index", "position") else pl.String
            for name in STAGED_SCHEMA.names
            if name not in ("split", "line", "messages")
        }
        | {"removed_by": pl.String}
    )


def _messages(lake: Lake, partition: str, record_indexes: pl.Series) -> Iterator[pl.DataFrame]:
    """(record_index, messages) of these records of a partition, in record order, by row group."""
    wanted = pl.DataFrame({"record_index": record_indexes})
    parquet = pq.ParquetFile(lake.layer_path("normalized", partition))
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group, columns=["record_index", "messages"])
        chunk: pl.DataFrame = pl.from_arrow(table)  # type: ignore[assignment]
        chunk = chunk.join(wanted, on="record_index", how="semi", maintain_order="left")
        if chunk.height:
            yield chunk


def _by_partition(rows: pl.DataFrame) -> Iterator[tuple[str, pl.DataFrame]]:
    """The rows of each partition, partitions in their order of appearance."""
    for (partition,), group in rows.group_by("partition", maintain_order=True):
        yield str(partition), group


def _text_chunks(lake: Lake, rows: pl.DataFrame, chunk_rows: int) -> Iterator[pl.Series]:
    """The near-duplicate texts of `rows` (`sql/training_dataset_texts.sql`), in order,
    `chunk_rows` at a time."""
    pending: list[pl.Series] = []
    size = 0
    with duckdb.connect() as con:
        for partition, group in _by_partition(rows):
            wanted = group.select("record_index")
            texts = con.sql(
                load_sql("training_dataset_texts"),
                params=[str(lake.layer_path("normalized", partition))],
            ).to_arrow_reader(chunk_rows)
            for batch in texts:
                chunk: pl.DataFrame = pl.from_arrow(batch)  # type: ignore[assignment]
                text = chunk.join(wanted, on="record_index", how="semi", maintain_order="left")
                pending.append(text.get_column("text"))
                size += text.height
                while size >= chunk_rows:
                    joined = pl.concat(pending)
                    yield joined.head(chunk_rows)
                    pending, size = [joined.slice(chunk_rows)], size - chunk_rows
    if size:
        yield pl.concat(pending)


def remove_near_duplicates(
    lake: Lake,
    candidates: pl.DataFrame,
    settings: NearDuplicateSettings,
    verdicts: Path | None = None,
) -> tuple[pl.DataFrame, int, bool]:
    """`candidates` with `removed_by = 'near_duplicate'` where a row is near a kept row
    before it; how many rows the LSH flagged for a closer look; and whether the verdicts of
    the last build were reused.

    `verdicts` (a file) keeps the last outcome with the key of what it was decided on: the
    rows left to compare, in order, with their normalized content hash, and the settings.
    The same key again (a batch re-run with the same content, a changed filter that removes
    nothing more) reuses it instead of reading and comparing every text again.

    Only the columns the comparison needs are copied for the rows left, and the verdicts
    go back into `removed_by` by position: the candidates' other columns are shared, never
    copied (at 1,000,000 conversations a copy of the rows left and a join took 1.5 GB)."""
    open_rows = candidates.get_column("removed_by").is_null()
    remaining = candidates.filter(open_rows).select("partition", "record_index", "content_hash")
    key = _verdict_key(remaining, settings)
    cached = _read_verdicts(verdicts, key) if verdicts is not None else None
    if cached is not None:
        removed_rows, flagged = cached
        near = (
            remaining.join(
                removed_rows.with_columns(pl.lit(True).alias("near")),
                on=["partition", "record_index"],
                how="left",
                maintain_order="left",
            )
            .get_column("near")
            .is_not_null()
            .to_numpy()
        )
    else:
        verdict = find_near_duplicates(
            lambda: _text_chunks(lake, remaining, settings.chunk_rows), settings
        )
        if len(verdict.keep) != remaining.height:
            raise RuntimeError(
                f"near-duplicate texts out of step: {len(verdict.keep)} verdicts for "
                f"{remaining.height} rows (a normalized file changed while the dataset was "
                "built?)"
            )
        near = ~verdict.keep
        flagged = verdict.candidates
        if verdicts is not None:
            removed_rows = remaining.filter(pl.Series(near)).select("partition", "record_index")
            _write_verdicts(verdicts, key, removed_rows, flagged)
    removed = np.zeros(candidates.height, dtype=bool)
    removed[np.flatnonzero(open_rows.to_numpy())[near]] = True
    updated = candidates.with_columns(
        pl.when(pl.Series(removed))
        .then(pl.lit("near_duplicate"))
        .otherwise(pl.col("removed_by"))
        .alias("removed_by")
    )
    return updated, flagged, cached is not None


def _verdict_key(remaining: pl.DataFrame, settings: NearDuplicateSettings) -> str:
    """sha256 of the rows to compare, in order (partition, record index, content hash), the
    near-duplicate settings, rensa's version and the dataset code's."""
    digest = hashlib.sha256(
        orjson.dumps([repr(settings), version("rensa"), FORMAT_VERSION, code_version()])
    )
    digest.update(
        remaining.select("partition", "record_index", "content_hash").write_csv().encode()
    )
    return digest.hexdigest()


def _read_verdicts(path: Path, key: str) -> tuple[pl.DataFrame, int] | None:
    try:
        kept = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    if kept.get("key") != key:
        return None
    rows = pl.DataFrame(
        kept["removed"], schema={"partition": pl.String, "record_index": pl.Int64}, orient="row"
    )
    return rows, int(kept["flagged"])


def _write_verdicts(path: Path, key: str, removed: pl.DataFrame, flagged: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"key": key, "flagged": flagged, "removed": removed.rows()}
    write_bytes_atomic(path, orjson.dumps(payload))


def verdicts_path(lake: Lake, name: str) -> Path:
    """Where the near-duplicate verdicts of dataset `name` are kept between builds."""
    return lake.data_dir / "lake" / "dataset" / f"{name}.near_duplicates.json"


def assign_lines(candidates: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """The kept rows with their split and line (`sql/training_dataset_lines.sql`). DuckDB
    gets each kept row's position and content hash only, and its split and line come back
    in the same order: the rows' other columns never go through it (at 1,000,000
    conversations a copy of about 1 GB)."""
    kept = (
        candidates.with_row_index("dataset_order")
        .filter(pl.col("removed_by").is_null())
        .drop("removed_by")
    )
    con = duckdb.connect()
    try:
        con.register("kept", kept.select("dataset_order", "content_hash"))
        lines = con.sql(
            load_sql("training_dataset_lines"),
            params={"validation_fraction": spec.validation_fraction, "split_seed": spec.split_seed},
        ).pl()
    finally:
        con.close()
    if not lines.get_column("dataset_order").equals(kept.get_column("dataset_order")):
        raise RuntimeError("training dataset lines out of step with the kept rows")
    return kept.with_columns(lines.get_column("split"), lines.get_column("line"))


def stage_lines(
    lake: Lake, lines: pl.DataFrame, spec: DatasetSpec, target: Path
) -> tuple[dict[str, int] | None, int]:
    """Write the lines, messages included, to `target` (Parquet, dataset order); in the
    `export` PII mode the messages are redacted first. Returns the redaction counts (None in
    the other modes) and the conversations that had something redacted."""
    redact = spec.pii_mode == "export"
    counts = dict.fromkeys(PII_KINDS, 0)
    conversations = 0
    columns = [name for name in STAGED_SCHEMA.names if name != "messages"]
    with atomic_path(target) as tmp:
        writer = pq.ParquetWriter(tmp, STAGED_SCHEMA, compression="zstd")
        try:
            for partition, group in _by_partition(lines):
                for chunk in _messages(lake, partition, group["record_index"]):
                    if redact:
                        result = redact_messages(chunk, phone_region=spec.phone_region)
                        chunk = result.frame
                        conversations += result.conversations
                        for kind, n in result.counts.items():
                            counts[kind] += n
                    staged = group.join(
                        chunk, on="record_index", how="inner", maintain_order="right"
                    )
                    table = staged.select(*columns, "messages").to_arrow().cast(STAGED_SCHEMA)
                    writer.write_table(table)
        finally:
            writer.close()
    return (counts if redact else None), conversations


def annotation_sources(lines: pl.DataFrame) -> list[dict]:
    """Which enricher, model and prompt version annotated how many lines."""
    keys = ["enricher", "model", "prompt_version"]
    grouped = lines.group_by(keys).len("lines").sort(keys, nulls_last=True)
    return grouped.to_dicts()


def stage_dataset(
    lake: Lake, spec: DatasetSpec, run_ids: Mapping[str, str], target: Path
) -> StagedDataset:
    """Run every step and stage the lines at `target` (see the module docstring)."""
    spec.check()
    partitions = dataset_partitions(lake, spec.partitions)
    candidates = select_candidates(lake, partitions, spec, run_ids)
    candidates, flagged, reused = remove_near_duplicates(
        lake, candidates, spec.near_duplicates, verdicts_path(lake, spec.name)
    )
    lines = assign_lines(candidates, spec)
    redacted, redacted_conversations = stage_lines(lake, lines, spec, target)
    removed = dict(candidates.get_column("removed_by").drop_nulls().value_counts().iter_rows())
    splits = dict(lines.get_column("split").value_counts().iter_rows())
    counts = {
        "completed": candidates.height,
        **{step: int(removed.get(step, 0)) for step in REMOVAL_STEPS},
        "kept": lines.height,
        "train": int(splits.get("train", 0)),
        "validation": int(splits.get("validation", 0)),
    }
    return StagedDataset(
        path=target,
        partitions=partitions,
        counts=counts,
        near_duplicate_candidates=flagged,
        near_duplicates_reused=reused,
        annotation_sources=annotation_sources(lines),
        redacted=redacted,
        redacted_conversations=redacted_conversations,
    )
