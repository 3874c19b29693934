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


# The longest tests, started first. Under `--dist worksteal` each test worker is given a
# contiguous share of the collection and, once idle, steals the end of another's: so each
# module here is placed at the head of the share with the least of them so far (about its
# seconds in CI on two cores, from `--durations`), and the short tests even out the end.
# Order inside a module is kept (module fixtures such as the UI's are set up once).
LONGEST_FIRST = {
    "test_crash_safety.py": 420,
    "test_ui_browser.py": 150,
    "test_llm_spend.py": 110,
    "test_run_workers.py": 100,
    "test_cli_operations.py": 100,
    "test_daemon_e2e.py": 90,
    "test_object_store.py": 90,
    "test_batch_async.py": 80,
    "test_messy_input.py": 45,
    "test_low_confidence.py": 40,
    "test_wheel.py": 40,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    if workers < 2:
        return
    modules: dict[str, list[pytest.Item]] = {}
    rest: list[pytest.Item] = []
    for item in items:
        name = item.path.name
        (modules.setdefault(name, []) if name in LONGEST_FIRST else rest).append(item)
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    load = [0] * workers
    for name in sorted(modules, key=lambda n: -LONGEST_FIRST[n]):
        share = load.index(min(load))
        heads[share] += modules[name]
        load[share] += LONGEST_FIRST[name]
    # Each worker's share is len(items) // workers (the first ones one less when uneven).
    sizes = [len(items) // workers] * workers
    for extra in range(len(items) % workers):
        sizes[-1 - extra] += 1
    ordered: list[pytest.Item] = []
    for head, size in zip(heads, sizes, strict=True):
        take = max(0, size - len(head))
        ordered += head + rest[:take]
        rest = rest[take:]
    items[:] = ordered + rest
