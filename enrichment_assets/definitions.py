"""The one `Definitions` of the code location: everything under `enrichment_assets/defs/`."""

from __future__ import annotations

from pathlib import Path

from dagster import load_from_defs_folder

# The package's own dg.toml names the defs folder, so this works from a checkout
# (`dg dev`, `dagster dev -w workspace.yaml`, `enrich`) and from the installed wheel alike.
defs = load_from_defs_folder(path_within_project=Path(__file__).parent)
