"""Which batch partitions `enrich run` may leave as they are: same inputs as their last run.

A batch's inputs are its frozen manifest (the partition key derives from the bytes, the
manifest names every file with its sha256), the data folder, the code and the settings
(`fingerprints.py`). Once a run of the whole pipeline for a batch has succeeded (every
layer materialized, no ERROR check failed), the runner tags that run with the batch's
fingerprint, taken before the run read anything (`INPUTS_TAG`). A later command leaves
the batch alone when the latest materialization of each layer comes from one run that
bears the current fingerprint, that run's enrichment left no annotation error (those are
retried), and the batch's lake and export files are all there.
"""

from __future__ import annotations

import hashlib

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from enrichment_assets.exports import EXPORTS, receipt_lines
from enrichment_assets.fingerprints import fingerprint
from enrichment_assets.lake import LAYERS, Lake
from enrichment_assets.object_store import S3Location, StoreSettings

# Tag of a successful run of the whole pipeline for a batch: the batch's input fingerprint.
INPUTS_TAG = "enrich/inputs_fingerprint"
LAYER_KEYS = tuple(
    AssetKey(name)
    for name in (
        "raw_conversations",
        "validated_conversations",
        "enriched_conversations",
        "normalized_conversations",
    )
)
_ENRICHED = AssetKey("enriched_conversations")


def batch_fingerprint(lake: Lake, batch: str) -> str | None:
    """The fingerprint of a batch's inputs; None when its manifest cannot be read."""
    try:
        manifest = lake.manifest_path(batch).read_bytes()
    except OSError:
        return None
    return fingerprint(
        {
            "batch": batch,
            "manifest": hashlib.sha256(manifest).hexdigest(),
            "data_dir": lake_location(lake),
        }
    )


def lake_location(lake: Lake) -> str:
    """Where the lake is: its object-store URI (every worker's working copy is the same
    lake), else its folder."""
    location = StoreSettings.from_env().location()
    return str(location) if isinstance(location, S3Location) else str(lake.data_dir.resolve())


def _files_present(lake: Lake, batch: str) -> bool:
    """Every lake layer of the batch, and each export its receipt says has lines (a kind
    without a line has no file, by design)."""
    if not all(lake.layer_path(layer, batch).exists() for layer in LAYERS):
        return False
    for kind in EXPORTS:
        lines = receipt_lines(lake, batch, kind)
        if lines is None or (lines > 0) != lake.export_path(kind, batch).exists():
            return False
    return True


def _last_run(instance: DagsterInstance, batch: str) -> str | None:
    """The run that materialized every layer of the batch last, when one run did, and its
    enrichment had no annotation error; else None."""
    runs = set()
    for key in LAYER_KEYS:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[batch]), limit=1
        ).records
        if not records or records[0].asset_materialization is None:
            return None
        runs.add(records[0].run_id)
        if key == _ENRICHED:
            errors = records[0].asset_materialization.metadata.get("annotation_errors")
            if errors is None or errors.value:
                return None
    return runs.pop() if len(runs) == 1 else None


def unchanged_batches(
    instance: DagsterInstance, lake: Lake, fingerprints: dict[str, str | None]
) -> dict[str, str]:
    """{batch: run id of its last run} of the batches whose inputs have the fingerprint of
    that run ({batch: fingerprint} given), and whose files are all there."""
    unchanged = {}
    for batch, current in fingerprints.items():
        if current is None or not _files_present(lake, batch):
            continue
        run_id = _last_run(instance, batch)
        run = instance.get_run_by_id(run_id) if run_id else None
        if run is not None and run.tags.get(INPUTS_TAG) == current:
            unchanged[batch] = run.run_id
    return unchanged


def remember_inputs(instance: DagsterInstance, run_id: str, batch_print: str | None) -> None:
    """Tag a successful run of the whole pipeline with the fingerprint of its batch's inputs."""
    if batch_print is not None:
        instance.add_run_tags(run_id, {INPUTS_TAG: batch_print})
