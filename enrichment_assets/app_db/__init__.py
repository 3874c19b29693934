"""The application's PostgreSQL database (`ENRICH_APP_DB_URL`), production only.

Reference metadata comes in from it; per-conversation statuses and daily
summaries go out to it. The schema is shipped as numbered SQL migrations under
`sql/postgres/` (`enrich db upgrade`). Everything goes through psycopg 3:
DuckDB's postgres extension downloads at run time and is not an option.
Unset = the embedded default: seed files in, nothing published.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from enrichment_assets import settings as env_settings
from enrichment_assets.postgres_url import libpq_url

if TYPE_CHECKING:
    from enrichment_assets.app_db.migrations import Migration, applied_versions, upgrade
    from enrichment_assets.app_db.publish import (
        publish_status,
        publish_summaries,
    )
    from enrichment_assets.app_db.reference import read_reference_tables, seed_reference_tables
    from enrichment_assets.app_db.status_rows import find_status

APP_DB_URL_ENV = "ENRICH_APP_DB_URL"

# Each name below lives in a submodule that imports psycopg (25 MB): imported on first
# use (PEP 562), so that a run without an application database never loads it.
_SUBMODULE_OF = {
    "Migration": "migrations",
    "applied_versions": "migrations",
    "upgrade": "migrations",
    "publish_status": "publish",
    "publish_summaries": "publish",
    "read_reference_tables": "reference",
    "seed_reference_tables": "reference",
    "find_status": "status_rows",
}


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE_OF.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{submodule}"), name)


def app_db_url() -> str | None:
    """`ENRICH_APP_DB_URL` (checked: `postgres_url.libpq_url`), or None when it is not set."""
    url = env_settings.raw(APP_DB_URL_ENV)
    return libpq_url(url, APP_DB_URL_ENV) if url else None


__all__ = [
    "APP_DB_URL_ENV",
    "Migration",
    "app_db_url",
    "applied_versions",
    "find_status",
    "publish_status",
    "publish_summaries",
    "read_reference_tables",
    "seed_reference_tables",
    "upgrade",
]
