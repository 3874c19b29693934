"""`new_raw_files`: files dropped in the landing folder become batch partitions and runs.

Each tick scans `ENRICH_LANDING_DIR`, freezes the settled files as batches
(`Lake.register_batch`: manifest + bytes in the landing store), and returns the
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

from enrichment_assets.automation.landing import (
    LandedFile,
    LandingCursor,
    ManifestIndex,
    group_into_batches,
    scan_landing,
)
from enrichment_assets.automation.settings import (
    NewFilesSettings,
    default_sensor_status,
    new_files_interval_seconds,
    requested_run_config,
)
from enrichment_assets.ingest import sniff_unreadable
from enrichment_assets.lake import Lake, Manifest, sha256_file
from enrichment_assets.partitions import batch_partitions
from enrichment_assets.resources import LakeResource

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

    Idempotent on content: a file whose sha256 is already in a manifest of a known
    partition is only marked handled, so a lost cursor never duplicates a batch.
    A manifest whose partition is missing from the instance (a tick that died
    half-way) is requested again.
    """
    plan = NewFilesPlan()
    scan = scan_landing(landing_dir, cursor, now=now, settle_seconds=settings.settle_seconds)
    cursor.forget_missing(scan.present)
    if scan.settling:
        plan.notes.append(
            f"{len(scan.settling)} file(s) modified in the last {settings.settle_seconds}s "
            "are still being written: next tick"
        )
    if not scan.ready:
        return plan

    budget = settings.max_batches_per_tick * settings.max_files_per_batch
    if len(scan.ready) > budget:
        plan.notes.append(
            f"{len(scan.ready) - budget} more ready file(s) wait for the next tick "
            f"(at most {settings.max_batches_per_tick} batches per tick)"
        )
    index = ManifestIndex.load(lake)
    fresh: list[LandedFile] = []
    orphans: dict[str, list[LandedFile]] = {}
    seen_hashes: set[str] = set()
    for landed in scan.ready[:budget]:
        unreadable = sniff_unreadable(landed.path)
        if unreadable is not None:
            plan.warnings.append(f"{landed.relative}: skipped, cannot be read: {unreadable}")
            cursor.mark(landed)
            continue
        digest = sha256_file(landed.path)
        if digest in seen_hashes:
            plan.notes.append(f"{landed.relative}: same content as another file of this tick")
            cursor.mark(landed)
            continue
        seen_hashes.add(digest)
        batch = index.batch_of_hash.get(digest)
        if batch is not None and batch in known_partitions:
            plan.notes.append(f"{landed.relative}: content already registered as batch {batch}")
            cursor.mark(landed)
            continue
        if batch is not None:
            orphans.setdefault(batch, []).append(landed)
            continue
        previous = index.latest_by_source.get(str(landed.path.resolve()))
        if previous is not None and previous[1] != digest:
            plan.warnings.append(
                f"{landed.relative} changed after it was registered as batch {previous[0]}: "
                "its new content becomes a new batch"
            )
        fresh.append(landed)

    for batch, files in orphans.items():
        manifest = lake.load_manifest(batch)
        plan.manifests.append(manifest)
        plan.notes.append(f"batch {batch}: registered earlier but not in the instance; adding it")
        for landed in files:
            cursor.mark(landed)

    groups = group_into_batches(
        fresh,
        max_files=settings.max_files_per_batch,
        max_bytes=settings.max_bytes_per_batch,
    )
    room = max(settings.max_batches_per_tick - len(plan.manifests), 0)
    for group in groups[:room]:
        try:
            manifest = lake.register_batch([landed.path for landed in group])
        except OSError as error:  # changed or vanished while being copied
            plan.warnings.append(f"batch of {group[0].relative}: not registered: {error}")
            continue
        plan.manifests.append(manifest)
        size = sum(entry.size for entry in manifest.files)
        plan.notes.append(
            f"batch {manifest.batch}: {len(group)} new file(s), {size} bytes: "
            + _files_tag([landed.relative for landed in group])
        )
        for landed in group:
            cursor.mark(landed)
    if len(groups) > room:
        plan.notes.append(f"{len(groups) - room} more batch(es) wait for the next tick")
    plan.unregistered = list(
        dict.fromkeys(m.batch for m in plan.manifests if m.batch not in known_partitions)
    )
    return plan


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
