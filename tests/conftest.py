"""Shared fixtures: a temporary data folder and a temporary Dagster instance per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, instance_for_test

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from enrichment_assets.lake import Lake
from tests.browser import chromium, open_offline  # noqa: F401  (fixtures for every test module)
from tests.llm_fixtures import llm_server  # noqa: F401  (fixture for every test module)

# One SeaweedFS per test worker process: a session fixture imported into two test modules
# would be two fixtures, and start two servers.
from tests.object_store import s3_bucket, s3_server  # noqa: F401  (fixtures for every test module)
from tests.postgres import app_db, new_database  # noqa: F401  (fixtures for every test module)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ENRICH_DATA_DIR for this test."""
    directory = tmp_path / "data"
    directory.mkdir()
    monkeypatch.setenv("ENRICH_DATA_DIR", str(directory))
    monkeypatch.delenv("ENRICH_LANDING_DIR", raising=False)
    monkeypatch.delenv("ENRICH_ENRICHER", raising=False)
    return directory


@pytest.fixture
def lake(data_dir: Path) -> Lake:
    return Lake(data_dir)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    """A real, temporary Dagster instance (SQLite in a temp DAGSTER_HOME)."""
    with instance_for_test() as dagster_instance:
        yield dagster_instance
