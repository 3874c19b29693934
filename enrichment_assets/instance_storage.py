"""Dagster's PostgreSQL storage for the URL users write (`deploy/dagster.yaml`).

dagster-postgres' own `DagsterPostgresStorage`, given `postgres_url` through
`postgres_url.sqlalchemy_url`: a bare `postgresql://` URL works (with the psycopg2 driver
dagster-postgres is written for), and a malformed one fails in one line that names
`DAGSTER_PG_URL`.
"""

from __future__ import annotations

from typing import Any

from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from enrichment_assets.postgres_url import sqlalchemy_url


class PostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` whose URL may be a plain `postgresql://` URL."""

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> PostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=sqlalchemy_url(pg_url_from_config(config_value)),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
