"""`raw_conversations`: every record of a batch as a row, parsed or not."""

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from enrichment_assets.defs.checks import gate_specs, prewarm_gate, run_gate
from enrichment_assets.defs.conversations.layer_io import partition_writer, write_layer
from enrichment_assets.defs.conversations.partitions import batch_partitions
from enrichment_assets.defs.metadata import (
    PREVIEW_ROWS,
    ProgressLog,
    layer_table,
    path_value,
    preview,
)
from enrichment_assets.defs.resources import LakeResource
from enrichment_assets.faults import fault_point
from enrichment_assets.ingest import (
    RAW_RECORD_SCHEMA,
    RecordLimits,
    file_problem_table,
    json_lines_ranges,
    read_line_range,
    read_raw_records,
)
from enrichment_assets.ingest.files import FileProblem
from enrichment_assets.lake import Lake, ManifestEntry
from enrichment_assets.status import register_records
from enrichment_assets.workers import (
    loaded,
    map_ordered,
    scratch_dir,
    shared_call,
    workers_for_bytes,
)

# The raw layer: where the record sits in the batch, when it was read, and the ingest row.
RAW_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.string()),
        pa.field("record_index", pa.int64()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
        *RAW_RECORD_SCHEMA,
    ]
)


def _read_file(
    path: Path,
    source_file: str,
    chunk_rows: int,
    limits: RecordLimits,
    workers: int,
    scratch: str | None,
) -> Iterator[pa.Table]:
    """Raw rows of one landed file: UTF-8 JSON Lines in byte ranges (of at most
    `chunk_rows` lines) over the worker processes, any other file read in this process,
    `chunk_rows` rows at a time."""
    ranges = json_lines_ranges(path, max_rows=chunk_rows, limits=limits)
    if ranges is None:
        yield from read_raw_records(path, source_file, chunk_rows, limits)
        return
    tasks = [(read_line_range, scratch, str(path), source_file, r, limits) for r in ranges]
    for table in map_ordered(shared_call, tasks, workers_for_bytes(path.stat().st_size, workers)):
        yield loaded(table)


def _read_entry(
    store: Lake,
    batch: str,
    entry: ManifestEntry,
    lake: LakeResource,
    scratch: str | None,
) -> Iterator[pa.Table]:
    """Raw rows of one manifest entry: one row for a file that could not be read at all."""
    if entry.rule is not None or entry.name is None:
        problem = FileProblem(entry.rule or "unreadable_file", entry.error or "unreadable")
        yield file_problem_table(entry.source_path, problem, entry.sha256)
        return
    yield from _read_file(
        store.stored_file(batch, entry),
        entry.source_path,
        lake.chunk_rows,
        lake.limits,
        lake.worker_count,
        scratch,
    )


@asset(
    partitions_def=batch_partitions,
    group_name="conversations",
    kinds={"parquet", "polars"},
    check_specs=gate_specs("raw_conversations", batch_partitions),
)
def raw_conversations(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    """Every record of the batch's frozen input files, one row each.

    Reads the immutable copies in the landing store (never the original files),
    detects JSON object / array / JSON Lines and UTF-8 / UTF-16, and maps OpenAI
    and ShareGPT records onto the canonical shape. A record that does not parse,
    or breaks a record limit (size, nesting depth, messages, characters per message:
    the `lake` resource), is a row too, with its parse error, rule and position; a
    file that could not be read at all is one row: nothing is dropped here.
    UTF-8 JSON Lines, the format of big files, is parsed by worker processes,
    one byte range each (`workers`).
    """
    with partition_writer(lake.lake, context.partition_key, context.run.run_id, context.log.info):
        return _raw_conversations(context, lake)


def _raw_conversations(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    store = lake.lake
    progress = ProgressLog(context.log)
    batch = context.partition_key
    manifest = store.load_manifest(batch)
    ingested_at = datetime.now(UTC)
    target = store.layer_path("raw", batch)
    parse_errors = 0
    formats: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    first_rows: pl.DataFrame | None = None
    workers = lake.worker_count
    with scratch_dir(workers) as scratch, write_layer(target, RAW_SCHEMA) as writer:
        for entry in manifest.files:
            for chunk in _read_entry(store, batch, entry, lake, scratch):
                start = writer.rows
                frame = pl.from_arrow(chunk).with_columns(  # type: ignore[union-attr]
                    pl.lit(batch).alias("partition"),
                    pl.int_range(start, start + chunk.num_rows, dtype=pl.Int64).alias(
                        "record_index"
                    ),
                    pl.lit(ingested_at).cast(pl.Datetime("us", "UTC")).alias("ingested_at"),
                )
                parse_errors += frame["parse_error"].is_not_null().sum()
                formats.update(frame["source_format"].to_list())
                rules.update(frame["parse_rule"].drop_nulls().to_list())
                writer.write(frame)
                if first_rows is None:
                    # Copied: a frame of worker results maps its whole scratch file.
                    first_rows = pl.DataFrame(frame.head(PREVIEW_ROWS).to_dicts())
                progress(f"{entry.source_path}: {writer.rows} records so far")
    # The gate's GX context loads while the statuses are registered; not before: beside
    # the worker processes of a big file it would add its imports to theirs.
    prewarm_gate(store)
    # Read back from the layer file: holding the chunks' columns instead would keep every
    # worker result mapped (their buffers are views of the scratch files).
    fault_point("raw")
    records = pl.read_parquet(target, columns=["record_index", "conversation_id"])
    register_records(store, batch, records, ingested_at)
    metadata = _raw_metadata(target, writer.rows, manifest.files, parse_errors, formats, rules)
    metadata["preview"] = preview(
        first_rows if first_rows is not None else pl.DataFrame(),
        [
            "record_index",
            "source_file",
            "position",
            "source_format",
            "conversation_id",
            "parse_error",
        ],
    )
    return MaterializeResult(
        metadata=metadata,
        check_results=run_gate(store, "raw_conversations", target, batch),
    )


def _raw_metadata(
    target: Path,
    rows: int,
    files: tuple[ManifestEntry, ...],
    parse_errors: int,
    formats: Counter[str],
    rules: Counter[str],
) -> dict[str, object]:
    """The raw layer's materialization metadata (its preview aside)."""
    return {
        **layer_table(target, rows),
        "parse_errors": int(parse_errors),
        "files": len(files),
        "input_bytes": sum(e.size for e in files),
        "formats": MetadataValue.json(dict(sorted(formats.items()))),
        # Why rows did not parse (and repaired lines): file, line and limit rules.
        "parse_rules": MetadataValue.json(dict(rules.most_common())),
        "unreadable_files": sum(1 for e in files if e.rule is not None),
        "path": path_value(target),
    }
