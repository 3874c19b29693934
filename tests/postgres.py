"""PostgreSQL for tests: the server at 127.0.0.1:5432 (or ENRICH_TEST_PG), databases
created per test and dropped after. Fixtures are made available by tests/conftest.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from enrichment_assets.app_db import seed_reference_tables, upgrade
from enrichment_assets.reference import REFERENCE_TABLES, SEEDS_DIR

PG_SERVER = os.environ.get("ENRICH_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def server_reachable() -> bool:
    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


requires_postgres = pytest.mark.skipif(
    not server_reachable(), reason=f"no PostgreSQL server at {PG_SERVER}"
)


@pytest.fixture
def new_database() -> Iterator[Callable[[str], str]]:
    """Creates databases on the test server; drops them all at the end."""
    created: list[str] = []

    def create(purpose: str) -> str:
        name = f"enrich_test_{purpose}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"{PG_SERVER}/{name}"

    yield create
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def app_db(new_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated application database with the seed reference data, configured."""
    url = new_database("app")
    upgrade(url)
    seed_reference_tables(url, SEEDS_DIR, REFERENCE_TABLES)
    monkeypatch.setenv("ENRICH_APP_DB_URL", url)
    return url
