"""Reading a conversation's status row back from the application database."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from enrichment_assets.sql_files import load_sql


def find_status(url: str, conversation_id: str) -> dict[str, Any] | None:
    """The latest status row of `conversation_id` (the columns of the status Parquet), or None."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            load_sql("postgres/queries/conversation_status_by_id"),
            {"conversation_id": conversation_id},
        ).fetchone()
