"""Dagster resources: the lake (data folder), the enricher settings, the application database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource, EnvVar, InitResourceContext
from pydantic import Field

from enrichment_assets.app_db import APP_DB_URL_ENV
from enrichment_assets.lake import Lake, default_data_dir
from enrichment_assets.run_liveness import heartbeat
from enrichment_assets.workers import default_workers


class LakeResource(ConfigurableResource):
    """The data folder: Parquet per layer and partition, landing store, exports.

    Defaults to `ENRICH_DATA_DIR` (or `./data`), read when a run starts.
    """

    data_dir: str = Field(
        default="",
        description="Root of the data folder; empty = ENRICH_DATA_DIR, or ./data.",
    )
    chunk_rows: int = Field(
        default=5_000,
        description="Conversations processed per chunk: bounds memory whatever the input size.",
    )
    enrich_chunk_rows: int = Field(
        default=10_000,
        description=(
            "Conversations per enricher call: set-based enrichers (heuristic) run faster on "
            "larger chunks; memory stays bounded by this, not by the partition."
        ),
    )

    workers: int = Field(
        default=0,
        description=(
            "Processes for the Python-bound work of a chunk (parsing, validation, text "
            "repair); 0 = ENRICH_WORKERS, or one per CPU; 1 = all in the run's process."
        ),
    )

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator[LakeResource]:
        """While a run uses the lake, it says it is alive (`run_liveness.heartbeat`), so that
        a run whose process dies is found and retried."""
        run = context.dagster_run
        if context.instance is None or run is None:
            yield self
            return
        with heartbeat(context.instance, run.run_id):
            yield self

    @property
    def worker_count(self) -> int:
        return self.workers or default_workers()

    @property
    def lake(self) -> Lake:
        return Lake(Path(self.data_dir) if self.data_dir else default_data_dir())


class AppDatabaseResource(ConfigurableResource):
    """The application's PostgreSQL database: reference data in, statuses and summaries out.

    Optional: with no URL the pipeline runs on the embedded default (seed files,
    nothing published). Build it with `app_database()` so that the URL comes from
    `ENRICH_APP_DB_URL` as an `EnvVar` (never written into the definitions).
    """

    url: str = Field(
        default="",
        description="postgresql:// URL of the application database; empty = not configured.",
    )

    @property
    def app_db_url(self) -> str | None:
        return self.url or None


def app_database() -> AppDatabaseResource:
    """The resource, from `ENRICH_APP_DB_URL` when it is set."""
    if os.environ.get(APP_DB_URL_ENV):
        return AppDatabaseResource(url=EnvVar(APP_DB_URL_ENV))
    return AppDatabaseResource()
