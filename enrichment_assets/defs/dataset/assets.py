"""`training_dataset`: one deduplicated dataset, with provenance for every line.

The library (`enrichment_assets/dataset/`) does the work; this module is its Dagster face:
the run config (`TrainingDatasetConfig`), the asset with its GX gate and conservation check,
the automation that rebuilds the default dataset after layer runs, and
`materialize_training_dataset`, the one call `enrich run` / `enrich demo` make at the end.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

from enrichment_assets import settings as env_settings
from enrichment_assets.dataset.build import (
    REMOVAL_STEPS,
    DatasetSpec,
    StagedDataset,
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
        metadata = _staged_metadata(store, spec, staged)
        conservation = _conservation(staged)
        if gate.blocked_reason is None and staged.conserved:
            build = _Build(context, store, spec, staged, folder, fingerprint)
            build.publish(metadata, check_outcomes([*gate.check_results, conservation]))
        else:
            reason = gate.blocked_reason or f"counts do not add up: {staged.counts}"
            context.log.error(f"dataset {spec.name}: files kept as they were: {reason}")
            metadata["withheld"] = MetadataValue.text(reason)
        return MaterializeResult(
            metadata=metadata, check_results=[*gate.check_results, conservation]
        )
    finally:
        staged_path.unlink(missing_ok=True)


def _conservation(staged: StagedDataset) -> AssetCheckResult:
    """The result of `CONSERVATION_CHECK` (its rule is in the check spec above)."""
    return AssetCheckResult(
        check_name=CONSERVATION_CHECK,
        asset_key=ASSET_NAME,
        passed=staged.conserved,
        severity=AssetCheckSeverity.ERROR,
        metadata={"counts": MetadataValue.json(staged.counts)},
    )


def _staged_metadata(store: Lake, spec: DatasetSpec, staged: StagedDataset) -> dict[str, object]:
    """What the materialization says about the staged lines: counts, settings, a preview."""
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
    return metadata


@dataclass(frozen=True)
class _Build:
    """A staged and gated build, to publish: unless its inputs changed meanwhile."""

    context: AssetExecutionContext
    store: Lake
    spec: DatasetSpec
    staged: StagedDataset
    folder: Path
    fingerprint: str

    def publish(self, metadata: dict[str, object], checks: list[dict[str, Any]]) -> None:
        """Publish the files (`publish_dataset`), record the publication, and add what was
        rewritten (or why nothing was) to `metadata`."""
        spec, counts = self.spec, self.staged.counts
        kept_metadata = {
            key: value
            for key, value in metadata.items()
            if isinstance(value, int | float | str) and key != "path"
        }
        if self.staged.redacted is not None:
            kept_metadata["pii_redacted"] = self.staged.redacted

        def remember(publication: Publication) -> None:
            record_publication(
                self.store,
                spec.name,
                self.folder,
                [*FILES, MANIFEST],
                fingerprint=self.fingerprint,
                run_id=self.context.run.run_id,
                metadata=kept_metadata,
                checks=checks,
            )

        fault_point("dataset")  # staged and gated, nothing published yet
        publication = publish_dataset(
            self.store, spec, self.staged, on_published=remember, is_current=self.still_current
        )
        metadata["manifest"] = path_value(publication.paths[MANIFEST])
        metadata["files_rewritten"] = MetadataValue.json(publication.changed)
        if publication.stale:
            reason = "its inputs changed while it was built: the next build publishes"
            self.context.log.warning(f"dataset {spec.name}: nothing published: {reason}")
            metadata["withheld"] = MetadataValue.text(reason)
        self.context.log.info(
            f"dataset {spec.name}: {counts['train']} train + {counts['validation']} "
            f"validation lines of {counts['completed']} completed conversations; "
            f"rewritten: {', '.join(publication.changed) or 'nothing (unchanged)'}"
        )

    def still_current(self) -> bool:
        """Whether the inputs are still those the build read (same fingerprint)."""
        now = dataset_partitions(self.store, self.spec.partitions)
        runs = normalized_run_ids(self.context.instance, now)
        return inputs_fingerprint(self.store, self.spec, now, runs) == self.fingerprint


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
    minimum_interval_seconds=env_settings.whole_number("ENRICH_DATASET_AUTOMATION_INTERVAL_S", 30),
    description="Rebuilds the default training dataset once layer runs have updated a batch.",
)
