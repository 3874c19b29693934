"""`enrich run` and `enrich demo`'s last step: the training dataset, built in-process
through `training_dataset_job` (or not at all when its inputs are unchanged)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from dagster import DagsterInstance, ExecuteInProcessResult

from enrichment_assets.cli.runner import QUIET_RUN_CONFIG, failed_error_checks, first_failure
from enrichment_assets.dataset.build import DATASET_NAME, dataset_partitions
from enrichment_assets.dataset.fingerprint import (
    PublishedRecord,
    inputs_fingerprint,
    unchanged_since,
)
from enrichment_assets.dataset.publish import MANIFEST, dataset_dir
from enrichment_assets.definitions import defs
from enrichment_assets.defs.dataset.assets import (
    ASSET_NAME,
    DEFAULT_DATASET,
    TrainingDatasetConfig,
    normalized_run_ids,
    training_dataset_job,
)
from enrichment_assets.defs.resources import LakeResource, PiiRedactionResource
from enrichment_assets.lake import Lake


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
    return _outcome_of(name, result)


def _outcome_of(name: str, result: ExecuteInProcessResult) -> DatasetOutcome:
    """What the dataset run did: its checks, its files, its one-line error."""
    failed_checks = failed_error_checks(result)
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
        error=None if result.success else first_failure(result),
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
