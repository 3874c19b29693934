"""`training_dataset`: one deduplicated dataset, with provenance for every line.

The library (`enrichment_assets/dataset/`) does the work; this module is its Dagster face:
the run config (`TrainingDatasetConfig`), the asset with its GX gate and conservation check,
the automation that rebuilds the default dataset after layer runs, and
`materialize_training_dataset`, the one call `enrich run` / `enrich demo` make at the end.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import polars as pl
from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    Config,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
)
from pydantic import Field

from enrichment_assets.dataset.build import (
    DATASET_NAME,
    REMOVAL_STEPS,
    DatasetSpec,
    dataset_partitions,
    stage_dataset,
)
from enrichment_assets.dataset.fingerprint import (
    PublishedRecord,
    inputs_fingerprint,
    record_publication,
    unchanged_since,
)
from enrichment_assets.dataset.near_duplicates import NearDuplicateSettings
from enrichment_assets.dataset.publish import (
    FILES,
    MANIFEST,
    Publication,
    dataset_dir,
    publish_dataset,
)
from enrichment_assets.defs.automation.settings import default_sensor_status
from enrichment_assets.defs.checks import gate_specs, validate_layer
from enrichment_assets.defs.conversations.normalized import normalized_conversations
from enrichment_assets.defs.metadata import (
    PREVIEW_ROWS,
    check_outcomes,
    path_value,
    preview,
    unchanged_result,
)
from enrichment_assets.defs.resources import LakeResource, PiiRedactionResource
from enrichment_assets.env import env_int
from enrichment_assets.faults import fault_point
from enrichment_assets.lake import Lake, hidden_temp

ASSET_NAME = "training_dataset"
CONSERVATION_CHECK = "dataset_counts_add_up"
NORMALIZED_KEY = AssetKey("normalized_conversations")
DEFAULT_DATASET = "default"


class TrainingDatasetConfig(Config):
    """Which dataset to build: the default one over every partition, or a named release."""

    name: str = Field(
        default=DEFAULT_DATASET,
        description="Folder under export/dataset/: 'default', or a release name (letters, "
        "digits, '.', '_', '-').",
    )
    partitions: list[str] = Field(
        default_factory=list, description="Batch partitions to read; empty = all of them."
    )
    min_quality_score: float | None = Field(
        default=None, description="Drop conversations scored below this (or unscored)."
    )
    min_confidence: float | None = Field(
        default=None, description="Drop conversations labelled with a lower confidence (or none)."
    )
    required_annotations: list[str] = Field(
        default_factory=list,
        description="Annotations that must be present: summary, topics, emotional_tone, "
        "sentiment, label, confidence, quality_score.",
    )
    near_duplicate_threshold: float = Field(
        default=0.8,
        description="Estimated Jaccard similarity of word 3-shingles from which a conversation "
        "is a near-duplicate of one kept before it.",
    )
    validation_fraction: float = Field(
        default=0.1, description="Share of conversations in validation.jsonl (by hash)."
    )
    split_seed: str = Field(
        default="", description="Changes which conversations the hash puts in validation."
    )

    def spec(self, pii: PiiRedactionResource) -> DatasetSpec:
        return DatasetSpec(
            name=self.name,
            partitions=tuple(self.partitions),
            min_quality_score=self.min_quality_score,
            min_confidence=self.min_confidence,
            required_annotations=tuple(self.required_annotations),
            near_duplicates=NearDuplicateSettings(threshold=self.near_duplicate_threshold),
            validation_fraction=self.validation_fraction,
            split_seed=self.split_seed,
            pii_mode=pii.pii_mode,
            phone_region=pii.region,
        )


def normalized_run_ids(instance: DagsterInstance, partitions: Iterable[str]) -> dict[str, str]:
    """The run of each partition's latest `normalized_conversations` materialization."""
    missing = list(partitions)
    found: dict[str, str] = {}
    for start in range(0, len(missing), 500):
        wanted = set(missing[start : start + 500])
        cursor = None
        while wanted - found.keys():
            page = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=NORMALIZED_KEY, asset_partitions=sorted(wanted)),
                limit=1000,
                cursor=cursor,
            )
            for record in page.records:  # newest first
                if record.partition_key is not None:
                    found.setdefault(record.partition_key, record.run_id)
            if not page.has_more:
                break
            cursor = page.cursor
    return found


# After layer runs: once a normalized partition is updated and nothing upstream is still in
# progress. Eager without its "no dependency missing" clause: a partition that never completed
# (flagged for a person) must not hold the dataset back.
DATASET_AUTOMATION = (
    AutomationCondition.eager()
    .without(~AutomationCondition.any_deps_missing())
    .with_label("after layer runs")
)


@asset(
    group_name="dataset",
    kinds={"duckdb", "polars", "json"},
    deps=[AssetDep(normalized_conversations, partition_mapping=AllPartitionMapping())],
    check_specs=[
        *gate_specs(ASSET_NAME),
        AssetCheckSpec(
            CONSERVATION_CHECK,
            asset=ASSET_NAME,
            blocking=True,
            description="completed = removed by each step + train + validation.",
        ),
    ],
    automation_condition=DATASET_AUTOMATION,
)
def training_dataset(
    context: AssetExecutionContext,
    config: TrainingDatasetConfig,
    lake: LakeResource,
    pii: PiiRedactionResource,
) -> MaterializeResult:
    """What a fine-tuning job consumes: `export/dataset/<name>/`.

    The current version of every completed conversation (its status file says `completed`)
    of all batch partitions, or of those the config names; filtered (minimum quality score,
    minimum confidence, required annotations); exact duplicates removed by normalized content
    hash; near-duplicates removed by MinHash LSH (rensa) at `near_duplicate_threshold`; split
    train/validation by hash. Writes `train.jsonl` and `validation.jsonl` (OpenAI chat
    format), `provenance.jsonl` (aligned line by line: conversation id, source file sha256
    and record position, partition, run id, enricher, model, prompt version, content hash)
    and `manifest.json` (counts removed by each step, settings, versions). With the `export`
    PII mode the lines' messages are redacted. The lines are staged and checked by the GX
    suite `expectations/training_dataset.json` first: a failed gate publishes nothing. Files
    whose bytes would not change are not rewritten.
    """
    store = lake.lake
    spec = config.spec(pii)
    spec.check()
    partitions = dataset_partitions(store, spec.partitions)
    run_ids = normalized_run_ids(context.instance, partitions)
    # Taken before anything is read: inputs that change during the build make the next
    # build's fingerprint differ, so it does the work again.
    fingerprint = inputs_fingerprint(store, spec, partitions, run_ids)
    folder = dataset_dir(store, spec.name)
    previous = unchanged_since(store, spec.name, folder, fingerprint)
    if previous is not None:
        context.log.info(
            f"dataset {spec.name}: inputs unchanged since run {previous.run_id}; "
            "files left as they were, nothing rebuilt"
        )
        return _unchanged(previous, folder)
    # Named after this process (`lake.hidden_temp`): an interrupt removes it, and the next
    # command removes it when its writer died.
    staged_path = hidden_temp(store.data_dir / "lake" / "dataset" / f"{spec.name}.parquet")
    try:
        staged = stage_dataset(store, spec, run_ids, staged_path)
        gate = validate_layer(store, ASSET_NAME, staged.path, spec.name)
        counts = staged.counts
        metadata: dict[str, object] = {
            "dagster/row_count": counts["kept"],
            "completed": counts["completed"],
            **{f"removed_{step}": counts[step] for step in REMOVAL_STEPS},
            "train": counts["train"],
            "validation": counts["validation"],
            "near_duplicate_candidates": staged.near_duplicate_candidates,
            "near_duplicates_reused": staged.near_duplicates_reused,
            "partitions": len(staged.partitions),
            "pii_mode": spec.pii_mode,
            "path": path_value(dataset_dir(store, spec.name)),
            "preview": preview(
                pl.read_parquet(staged.path, n_rows=PREVIEW_ROWS),
                ["split", "line", "conversation_id", "partition", "position", "source_file"],
            ),
        }
        if staged.redacted is not None:
            metadata["pii_redacted"] = MetadataValue.json(staged.redacted)
            metadata["pii_redacted_conversations"] = staged.redacted_conversations
        conservation = AssetCheckResult(
            check_name=CONSERVATION_CHECK,
            asset_key=ASSET_NAME,
            passed=staged.conserved,
            severity=AssetCheckSeverity.ERROR,
            metadata={"counts": MetadataValue.json(counts)},
        )
        if gate.blocked_reason is None and staged.conserved:
            checks = check_outcomes([*gate.check_results, conservation])
            kept_metadata = {
                key: value
                for key, value in metadata.items()
                if isinstance(value, int | float | str) and key != "path"
            }
            if staged.redacted is not None:
                kept_metadata["pii_redacted"] = staged.redacted

            def remember(publication: Publication) -> None:
                record_publication(
                    store,
                    spec.name,
                    folder,
                    [*FILES, MANIFEST],
                    fingerprint=fingerprint,
                    run_id=context.run.run_id,
                    metadata=kept_metadata,
                    checks=checks,
                )

            def still_current() -> bool:
                now = dataset_partitions(store, spec.partitions)
                runs = normalized_run_ids(context.instance, now)
                return inputs_fingerprint(store, spec, now, runs) == fingerprint

            fault_point("dataset")  # staged and gated, nothing published yet
            publication = publish_dataset(
                store, spec, staged, on_published=remember, is_current=still_current
            )
            metadata["manifest"] = path_value(publication.paths[MANIFEST])
            metadata["files_rewritten"] = MetadataValue.json(publication.changed)
            if publication.stale:
                reason = "its inputs changed while it was built: the next build publishes"
                context.log.warning(f"dataset {spec.name}: nothing published: {reason}")
                metadata["withheld"] = MetadataValue.text(reason)
            context.log.info(
                f"dataset {spec.name}: {counts['train']} train + {counts['validation']} "
                f"validation lines of {counts['completed']} completed conversations; "
                f"rewritten: {', '.join(publication.changed) or 'nothing (unchanged)'}"
            )
        else:
            reason = gate.blocked_reason or f"counts do not add up: {counts}"
            context.log.error(f"dataset {spec.name}: files kept as they were: {reason}")
            metadata["withheld"] = MetadataValue.text(reason)
        return MaterializeResult(
            metadata=metadata, check_results=[*gate.check_results, conservation]
        )
    finally:
        staged_path.unlink(missing_ok=True)


def _unchanged(previous: PublishedRecord, folder: Path) -> MaterializeResult:
    """The result of a build skipped because its inputs did not change."""
    return unchanged_result(
        previous,
        ASSET_NAME,
        {
            "files_rewritten": MetadataValue.json([]),
            "path": path_value(folder),
            "manifest": path_value(folder / MANIFEST),
        },
    )


training_dataset_job = define_asset_job(
    "training_dataset_job",
    selection=AssetSelection.assets(training_dataset),
    description="Build export/dataset/<name>/ (the default dataset unless configured).",
)

training_dataset_automation = AutomationConditionSensorDefinition(
    "training_dataset_automation",
    target=AssetSelection.assets(training_dataset),
    default_status=default_sensor_status(),
    minimum_interval_seconds=env_int("ENRICH_DATASET_AUTOMATION_INTERVAL_S", 30),
    description="Rebuilds the default training dataset once layer runs have updated a batch.",
)


@dataclass
class DatasetOutcome:
    """What `materialize_training_dataset` did, for the command line to print."""

    name: str
    success: bool
    run_id: str
    folder: Path | None  # None when the name is not a valid folder name
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None
    counts: dict | None = None  # the manifest's counts when the files are published
    unchanged: bool = False  # inputs unchanged since the last build: nothing was rebuilt
    withheld: str | None = None  # why a build that ran published nothing


def materialize_training_dataset(
    instance: DagsterInstance,
    *,
    name: str = DEFAULT_DATASET,
    partitions: Iterable[str] = (),
    tags: dict[str, str] | None = None,
    config: dict | None = None,
    run_when_unchanged: bool = True,
) -> DatasetOutcome:
    """Build one dataset in-process through `training_dataset_job` (what `enrich run` and
    `enrich demo` call last: the default dataset over every partition). `config` adds any
    other `TrainingDatasetConfig` field. Inputs unchanged since the files were published:
    the run skips the work (its metadata says so); with `run_when_unchanged=False` (the
    command line) no run is launched at all, and the outcome names the run that built them."""
    from enrichment_assets.cli.runner import QUIET_RUN_CONFIG
    from enrichment_assets.definitions import defs

    store = LakeResource().lake
    previous = (
        None
        if run_when_unchanged
        else _published_and_unchanged(instance, store, name, partitions, config)
    )
    if previous is not None:
        folder = dataset_dir(store, name)
        return DatasetOutcome(
            name=name,
            success=True,
            run_id=previous.run_id,
            folder=folder,
            counts=orjson.loads((folder / MANIFEST).read_bytes())["counts"],
            unchanged=True,
        )

    run_config = {
        **QUIET_RUN_CONFIG,
        "ops": {
            ASSET_NAME: {"config": {**(config or {}), "name": name, "partitions": list(partitions)}}
        },
    }
    job = defs.resolve_job_def(training_dataset_job.name)
    result = job.execute_in_process(
        instance=instance, run_config=run_config, tags=tags or {}, raise_on_error=False
    )
    failed_checks = [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == AssetCheckSeverity.ERROR
    ]
    folder = dataset_dir(LakeResource().lake, name) if DATASET_NAME.fullmatch(name) else None
    manifest = folder / MANIFEST if folder is not None else None
    success = result.success and not failed_checks
    metadata = {
        key: value
        for event in result.get_asset_materialization_events()
        for key, value in event.materialization.metadata.items()
    }
    withheld = metadata.get("withheld")
    return DatasetOutcome(
        unchanged="skipped" in metadata,
        withheld=str(withheld.value) if withheld is not None else None,  # type: ignore[attr-defined]
        name=name,
        success=success,
        run_id=result.run_id,
        folder=folder,
        failed_checks=failed_checks,
        error=None if result.success else _failure(result),
        counts=orjson.loads(manifest.read_bytes())["counts"]
        if success and manifest is not None and manifest.is_file()
        else None,
    )


def _published_and_unchanged(
    instance: DagsterInstance,
    store: Lake,
    name: str,
    partitions: Iterable[str],
    config: dict | None,
) -> PublishedRecord | None:
    """The last publication's record when a build with these settings would read the same
    inputs (a `stat` per file and one query of the instance); None when it must run."""
    try:
        settings = TrainingDatasetConfig(name=name, partitions=list(partitions), **(config or {}))
        spec = settings.spec(PiiRedactionResource())
        spec.check()
        selected = dataset_partitions(store, spec.partitions)
        fingerprint = inputs_fingerprint(
            store, spec, selected, normalized_run_ids(instance, selected)
        )
        return unchanged_since(store, name, dataset_dir(store, name), fingerprint)
    except (ValueError, OSError, KeyError):  # the run says what is wrong, in one line
        return None


def _failure(result: object) -> str:
    """One line: the failed step's root error."""
    for event in result.all_events:  # type: ignore[attr-defined]
        if event.is_step_failure and event.event_specific_data is not None:
            error = event.event_specific_data.error
            while error is not None and error.cause is not None:
                error = error.cause
            message = error.message.strip().splitlines()[0] if error else "see the run's logs"
            return f"step {event.step_key} failed: {message}"
    return "the run failed: see its logs in the Dagster UI"
