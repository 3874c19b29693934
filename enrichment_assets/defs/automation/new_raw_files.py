"""`new_raw_files`: files dropped in the landing folder become batch partitions and runs.

Each tick scans `ENRICH_LANDING_DIR` (never leaving it: see `landing`), freezes the
settled files as batches by content (`landing_store.register_batch`: manifest + bytes
in the landing store, the content index shared with `enrich run`), and returns the
new dynamic partitions and their runs in one `SensorResult`, so a run is never
requested for a partition that does not exist yet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from dagster import (
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from enrichment_assets.defs.automation.landing import (
    LandedFile,
    LandingCursor,
    group_into_batches,
    scan_landing,
)
from enrichment_assets.defs.automation.settings import (
    NewFilesSettings,
    default_sensor_status,
    new_files_interval_seconds,
    requested_run_config,
)
from enrichment_assets.defs.conversations.partitions import batch_partitions
from enrichment_assets.defs.resources import LakeResource
from enrichment_assets.ingest.files import escape_name
from enrichment_assets.inputs import inspect_file
from enrichment_assets.lake import Lake, Manifest
from enrichment_assets.landing_store import ContentIndex, SourceFile, register_batch

PIPELINE_JOB = "conversations_pipeline"
TRIGGER_TAG = "enrich/trigger"
FILES_TAG = "enrich/files"
FILE_COUNT_TAG = "enrich/file_count"
BYTES_TAG = "enrich/bytes"
_MAX_TAG_CHARS = 500


@dataclass
class NewFilesPlan:
    """What one tick decided: batches to run, and why (one line each, for the log)."""

    manifests: list[Manifest] = field(default_factory=list)
    unregistered: list[str] = field(default_factory=list)  # partitions to add
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _files_tag(names: list[str]) -> str:
    text = ", ".join(names)
    return text if len(text) <= _MAX_TAG_CHARS else text[: _MAX_TAG_CHARS - 1] + "…"


def plan_new_files(
    lake: Lake,
    landing_dir: Path,
    known_partitions: set[str],
    cursor: LandingCursor,
    settings: NewFilesSettings,
    *,
    now: float,
) -> NewFilesPlan:
    """Register the settled new files of `landing_dir` as batches; updates `cursor`.

    Idempotent on content (the lake's content index): a file whose bytes are already
    in a batch of a known partition is only marked handled, so a lost cursor never
    duplicates a batch. A batch whose partition is missing from the instance (a tick
    that died half-way) is requested again. Entries that are never read (links out
    of the folder, FIFOs, ...) and files that cannot be read get one warning each;
    an empty, binary or non-JSON file is landed as one quarantined row. One bad entry
    never fails the tick.
    """
    plan = NewFilesPlan()
    ready = _settled_files(landing_dir, cursor, settings, plan, now=now)
    if not ready:
        return plan
    sorted_files = _sort_ready(lake, ready, known_partitions, cursor, plan)
    for batch, files in sorted_files.orphans.items():
        plan.manifests.append(lake.load_manifest(batch))
        plan.notes.append(f"batch {batch}: registered earlier but not in the instance; adding it")
        for landed in files:
            cursor.mark(landed)
    _register_batches(lake, sorted_files, cursor, settings, plan)
    plan.unregistered = list(
        dict.fromkeys(m.batch for m in plan.manifests if m.batch not in known_partitions)
    )
    return plan


@dataclass
class _ReadyFiles:
    """The tick's ready files by what becomes of them."""

    fresh: list[LandedFile] = field(default_factory=list)  # new content: batches to register
    sources: dict[str, SourceFile] = field(default_factory=dict)  # of the fresh, by path
    orphans: dict[str, list[LandedFile]] = field(default_factory=dict)  # by batch


def _settled_files(
    landing_dir: Path,
    cursor: LandingCursor,
    settings: NewFilesSettings,
    plan: NewFilesPlan,
    *,
    now: float,
) -> list[LandedFile]:
    """The files of the landing folder ready this tick (at most a tick's worth)."""
    scan = scan_landing(landing_dir, cursor, now=now, settle_seconds=settings.settle_seconds)
    cursor.forget_missing(scan.present)
    for refused in scan.refused:
        plan.warnings.append(f"{refused.relative}: {refused.reason}")
        cursor.mark(refused)
    if scan.settling:
        plan.notes.append(
            f"{len(scan.settling)} file(s) modified in the last {settings.settle_seconds}s "
            "are still being written: next tick"
        )
    budget = settings.max_batches_per_tick * settings.max_files_per_batch
    if len(scan.ready) > budget:
        plan.notes.append(
            f"{len(scan.ready) - budget} more ready file(s) wait for the next tick "
            f"(at most {settings.max_batches_per_tick} batches per tick)"
        )
    return scan.ready[:budget]


def _sort_ready(
    lake: Lake,
    ready: list[LandedFile],
    known_partitions: set[str],
    cursor: LandingCursor,
    plan: NewFilesPlan,
) -> _ReadyFiles:
    """Inspect each ready file: skipped, already known, of an orphan batch, or fresh."""
    index = ContentIndex(lake)
    files = _ReadyFiles()
    seen_hashes: set[str] = set()
    for landed in ready:
        try:
            source = inspect_file(
                landed.real, display=escape_name(landed.path), follow_symlinks=False
            )
            kind, text = _verdict(landed, source, index, known_partitions, seen_hashes)
        except (OSError, ValueError) as error:  # one bad entry never fails the tick
            plan.warnings.append(f"{landed.relative}: skipped: {error}")
            cursor.mark(landed)
            continue
        if kind == "skip":
            plan.warnings.append(text)
            cursor.mark(landed)
        elif kind == "known":
            plan.notes.append(text)
            cursor.mark(landed)
        elif kind == "orphan":
            files.orphans.setdefault(text, []).append(landed)
        else:
            if text:
                plan.warnings.append(text)
            files.fresh.append(landed)
            files.sources[landed.relative] = source
    return files


def _register_batches(
    lake: Lake,
    files: _ReadyFiles,
    cursor: LandingCursor,
    settings: NewFilesSettings,
    plan: NewFilesPlan,
) -> None:
    """Group the fresh files into batches and register as many as the tick has room for."""
    groups = group_into_batches(
        files.fresh,
        max_files=settings.max_files_per_batch,
        max_bytes=settings.max_bytes_per_batch,
    )
    room = max(settings.max_batches_per_tick - len(plan.manifests), 0)
    for group in groups[:room]:
        try:
            registration = register_batch(
                lake, [files.sources[landed.relative] for landed in group]
            )
        except OSError as error:  # changed or vanished while being copied: next tick
            plan.warnings.append(f"batch of {group[0].relative}: not registered: {error}")
            continue
        for display, holder in registration.known.items():
            plan.notes.append(f"{display}: content already registered as batch {holder}")
        manifest = registration.manifest
        if manifest is not None:
            plan.manifests.append(manifest)
            size = sum(entry.size for entry in manifest.files)
            plan.notes.append(
                f"batch {manifest.batch}: {len(manifest.files)} new file(s), {size} bytes: "
                + _files_tag([landed.relative for landed in group])
            )
        for landed in group:
            cursor.mark(landed)
    if len(groups) > room:
        plan.notes.append(f"{len(groups) - room} more batch(es) wait for the next tick")


def _verdict(
    landed: LandedFile,
    source: SourceFile,
    index: ContentIndex,
    known_partitions: set[str],
    seen_hashes: set[str],
) -> tuple[str, str]:
    """What to do with one ready file: ("skip" | "known" | "orphan" | "land", why)."""
    if source.sha256 is None:  # unreadable, vanished, or no longer a regular file
        return "skip", f"{landed.relative}: skipped: {source.error}"
    if source.sha256 in seen_hashes:
        return "known", f"{landed.relative}: same content as another file of this tick"
    seen_hashes.add(source.sha256)
    batch = index.batch_of(source.sha256)
    if batch is not None and batch in known_partitions:
        return "known", f"{landed.relative}: content already registered as batch {batch}"
    if batch is not None:
        return "orphan", batch
    if source.rule is not None:
        return "land", f"{landed.relative}: {source.error}: landed as one quarantined row"
    previous = index.last_landing_of(source.display)
    if previous is not None and previous[1] != source.sha256:
        return "land", (
            f"{landed.relative} changed after it was registered as batch {previous[0]}: "
            "its new content becomes a new batch"
        )
    return "land", ""


def run_request_for(manifest: Manifest) -> RunRequest:
    names = [Path(entry.source_path).name for entry in manifest.files]
    return RunRequest(
        partition_key=manifest.batch,
        run_key=f"new-batch:{manifest.batch}",
        run_config=requested_run_config(),
        tags={
            TRIGGER_TAG: "new_raw_files",
            FILES_TAG: _files_tag(names),
            FILE_COUNT_TAG: str(len(manifest.files)),
            BYTES_TAG: str(sum(entry.size for entry in manifest.files)),
        },
    )


def new_raw_files_tick(
    context: SensorEvaluationContext,
    lake: Lake,
    settings: NewFilesSettings,
    *,
    now: float,
) -> SensorResult:
    """One evaluation of `new_raw_files` at time `now` (epoch seconds)."""
    cursor = LandingCursor.parse(context.cursor)
    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    plan = plan_new_files(lake, lake.landing_dir, known, cursor, settings, now=now)
    for warning in plan.warnings:
        context.log.warning(warning)
    for note in plan.notes:
        context.log.info(note)
    if not plan.manifests:
        reason = "; ".join(plan.notes[-1:]) or f"no new settled files in {lake.landing_dir}"
        return SensorResult(skip_reason=reason, cursor=cursor.serialize())
    return SensorResult(
        run_requests=[run_request_for(manifest) for manifest in plan.manifests],
        dynamic_partitions_requests=(
            [batch_partitions.build_add_request(plan.unregistered)] if plan.unregistered else []
        ),
        cursor=cursor.serialize(),
    )


@sensor(
    name="new_raw_files",
    job_name=PIPELINE_JOB,
    minimum_interval_seconds=new_files_interval_seconds(),
    default_status=default_sensor_status(),
    description=(
        "Registers settled files of the landing folder (ENRICH_LANDING_DIR) as batch "
        "partitions, grouping small files, and requests their pipeline run."
    ),
)
def new_raw_files(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
    """New files in the landing folder → batch partitions → pipeline runs."""
    return new_raw_files_tick(context, lake.lake, NewFilesSettings.from_env(), now=time.time())
