"""Dagster resources: the lake (data folder) and the enricher settings."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from enrichment_assets.lake import Lake, default_data_dir


class LakeResource(ConfigurableResource):
    """The data folder: Parquet per layer and partition, landing store, exports.

    Defaults to `ENRICH_DATA_DIR` (or `./data`), read when a run starts.
    """

    data_dir: str = Field(
        default="",
        description="Root of the data folder; empty = ENRICH_DATA_DIR, or ./data.",
    )
    chunk_rows: int = Field(
        default=20_000,
        description="Conversations processed per chunk: bounds memory whatever the input size.",
    )

    @property
    def lake(self) -> Lake:
        return Lake(Path(self.data_dir) if self.data_dir else default_data_dir())


class EnricherResource(ConfigurableResource):
    """Which enricher annotates conversations (`ENRICH_ENRICHER`, default `heuristic`)."""

    kind: str = Field(
        default="",
        description="heuristic (offline, deterministic) or openai; empty = ENRICH_ENRICHER.",
    )

    def build(self, use_cache: bool = True):  # -> Enricher
        from enrichment_assets.enrichers.heuristic import HeuristicEnricher

        del use_cache  # the heuristic enricher has no cache

        kind = self.kind or os.environ.get("ENRICH_ENRICHER", "heuristic")
        if kind != "heuristic":
            raise ValueError(f"unknown enricher {kind!r}: expected heuristic or openai")
        return HeuristicEnricher()
