"""The production profile on the real PostgreSQL at 127.0.0.1:5432.

Dagster's storage from `deploy/dagster.yaml` (dagster-postgres) and the
application database (`ENRICH_APP_DB_URL`): its migrations, reference data in,
statuses and summaries out. Every test creates its own databases and drops them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
import psycopg
import pytest
from dagster import DagsterInstance

from enrichment_assets.app_db import applied_versions, publish_summaries
from enrichment_assets.app_db.migrations import available_migrations
from enrichment_assets.app_db.publish import publish_status
from enrichment_assets.cli.runner import land_files, materialize_partitions
from enrichment_assets.lake import Lake
from enrichment_assets.queries import conversation_status
from enrichment_assets.sample_data import write_sample_files
from enrichment_assets.status import STATUS_SCHEMA, read_status
from tests.postgres import requires_postgres

REPO = Path(__file__).resolve().parents[1]
# Waiting for another process to reach a point, not a performance assertion.
WAIT_LIMIT_S = 60

pytestmark = requires_postgres


@pytest.fixture
def pg_instance(
    new_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[DagsterInstance, str]]:
    """A Dagster instance built from deploy/dagster.yaml on its own database."""
    url = new_database("dagster")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # The plain form of Dagster's docs (enrichment_assets.instance_storage names the driver).
    assert url.startswith("postgresql://")
    monkeypatch.setenv("DAGSTER_PG_URL", url)
    with DagsterInstance.get() as instance:
        yield instance, url


def _one(url: str, query: str, params: list | None = None) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()  # type: ignore[return-value]


def _status_rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT partition, record_index, conversation_id, status, retry_count, last_error "
            "FROM conversation_status ORDER BY partition, record_index"
        ).fetchall()


def _sample_batch(directory: Path, n: int = 40) -> list[Path]:
    return write_sample_files(directory, n, files=1, seed=11)


def _status_frame(partition: str, n: int, status: str, now: datetime) -> pl.DataFrame:
    """A status frame of `n` records, as `status.read_status` returns it."""
    return pl.DataFrame(
        {
            "partition": [partition] * n,
            "record_index": list(range(n)),
            "conversation_id": [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{i}")) for i in range(n)],
            "status": [status] * n,
            "retry_count": [0] * n,
            "last_attempt": [now] * n,
            "last_error": [None] * n,
            "raw_stored_at": [now] * n,
            "enriched_at": [None] * n,
            "updated_at": [now] * n,
        },
        schema=STATUS_SCHEMA,
    )


def _summaries(day: date, users: list[str]) -> pl.DataFrame:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return pl.DataFrame(
        {
            "user_id": users,
            "window_start": [start] * len(users),
            "window_end": [start + timedelta(hours=24)] * len(users),
            "persona_id": ["persona-busy-parent"] * len(users),
            "summary": [f"{u} asked about billing twice" for u in users],
            "key_topics": [["billing", "refund"]] * len(users),
            "emotional_tone": ["frustrated"] * len(users),
            "message_count": [7] * len(users),
            "compression_ratio": [0.12] * len(users),
            "confidence": [0.8] * len(users),
        }
    )


def test_db_upgrade_applies_each_migration_once(new_database: Callable[[str], str]) -> None:
    url = new_database("app")
    versions = {m.version for m in available_migrations()}
    first = subprocess.run(
        [sys.executable, "-m", "enrichment_assets.cli", "db", "upgrade", "--url", url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    assert "applied 0001_reference_tables" in first.stdout
    second = subprocess.run(
        [sys.executable, "-m", "enrichment_assets.cli", "db", "upgrade", "--url", url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert second.returncode == 0 and "schema up to date" in second.stdout
    assert applied_versions(url) == versions
    assert _one(url, "SELECT count(*) FROM enrich_schema_migrations")[0] == len(versions)


def test_db_upgrade_without_a_database_is_one_line_and_non_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ENRICH_APP_DB_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "enrichment_assets.cli", "db", "upgrade"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "enrich: error: no application database: set ENRICH_APP_DB_URL or pass --url"
    ]


def test_demo_runs_on_postgres_storage_and_publishes_one_status_row_per_record(
    lake: Lake, pg_instance: tuple[DagsterInstance, str], app_db: str, tmp_path: Path
) -> None:
    instance, dagster_url = pg_instance
    # Reference data comes from the app database, not the seed files.
    with psycopg.connect(app_db) as conn:
        conn.execute(
            "UPDATE personas SET name = 'Anxious student (app db)' "
            "WHERE persona_id = 'persona-anxious-student'"
        )
    (partition,) = land_files(lake, instance, _sample_batch(tmp_path / "samples"))
    (outcome,) = materialize_partitions(instance, [partition])
    assert outcome.success, outcome

    runs = dict(_all(dagster_url, "SELECT run_id, status FROM runs"))
    assert runs[outcome.run_id] == "SUCCESS"

    lake_status = read_status(lake, partition)
    published = _status_rows(app_db)
    assert len(published) == lake_status.height
    assert {(r[1], r[3]) for r in published} == set(
        lake_status.select("record_index", pl.col("status").cast(pl.String)).iter_rows()
    )
    assert {r[3] for r in published} <= {"completed", "validation_failed"}

    docs = [orjson.loads(line) for line in lake.export_path("enriched", partition).open("rb")]
    personas = {
        d["metadata"]["persona"]["name"] for d in docs if d["metadata"]["persona"] is not None
    }
    assert "Anxious student (app db)" in personas
    assert "Anxious student" not in personas

    # `enrich status` answers from the app database.
    with psycopg.connect(app_db) as conn:
        conn.execute(
            "UPDATE conversation_status SET retry_count = 3 WHERE conversation_id = %s",
            [docs[0]["conversation_id"]],
        )
    found = conversation_status(lake, docs[0]["conversation_id"], app_db)
    assert found is not None
    assert found["status"] == "completed" and found["retry_count"] == 3
    assert found["enriched"]["conversation_id"] == docs[0]["conversation_id"]


def _all(url: str, query: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def test_running_the_same_partition_twice_leaves_the_same_rows(
    lake: Lake, pg_instance: tuple[DagsterInstance, str], app_db: str, tmp_path: Path
) -> None:
    instance, _ = pg_instance
    (partition,) = land_files(lake, instance, _sample_batch(tmp_path / "samples", 30))
    (first,) = materialize_partitions(instance, [partition])
    before = _status_rows(app_db)
    (second,) = materialize_partitions(instance, [partition])
    assert first.success and second.success
    after = _status_rows(app_db)
    assert len(after) == len(before) == read_status(lake, partition).height
    # Same rows; only the retry count moved (a re-materialization is an attempt).
    assert [r[:4] for r in after] == [r[:4] for r in before]


def test_publishing_summaries_twice_replaces_the_day(app_db: str) -> None:
    day = date(2024, 6, 1)
    publish_summaries(app_db, day, _summaries(day, ["u1", "u2", "u3"]))
    publish_summaries(app_db, day, _summaries(day, ["u1", "u2", "u3"]))
    assert _one(app_db, "SELECT count(*) FROM conversation_summaries")[0] == 3
    # A re-run of the day without u3 removes u3's summary, never adds a row.
    result = publish_summaries(app_db, day.isoformat(), _summaries(day, ["u1", "u2"]))
    assert result.deleted == 1
    rows = _all(app_db, "SELECT user_id, day, key_topics FROM conversation_summaries ORDER BY 1")
    assert rows == [("u1", day, ["billing", "refund"]), ("u2", day, ["billing", "refund"])]
    # Another day is untouched by this one.
    other = date(2024, 6, 2)
    publish_summaries(app_db, other, _summaries(other, ["u1"]))
    publish_summaries(app_db, day, _summaries(day, ["u1"]))
    assert _one(app_db, "SELECT count(*) FROM conversation_summaries")[0] == 2


def test_a_failure_between_staging_and_upsert_keeps_the_previous_partition(
    app_db: str,
) -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    publish_status(app_db, "batch-a", _status_frame("batch-a", 500, "not_started", now))
    before = _status_rows(app_db)
    # Two rows with the same key stage fine (the staging table has no key) and
    # fail in the upsert, after the COPY, inside the partition's transaction.
    newer = _status_frame("batch-a", 400, "completed", now + timedelta(hours=1))
    duplicated = pl.concat([newer, newer.tail(1)])
    with pytest.raises(psycopg.errors.CardinalityViolation):
        publish_status(app_db, "batch-a", duplicated)
    assert _status_rows(app_db) == before


def test_a_publish_killed_after_its_copy_keeps_the_previous_partition(
    app_db: str, tmp_path: Path
) -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    publish_status(app_db, "batch-a", _status_frame("batch-a", 2000, "not_started", now))
    before = _status_rows(app_db)
    newer = tmp_path / "newer.parquet"
    _status_frame("batch-a", 1500, "completed", now + timedelta(hours=1)).write_parquet(newer)
    app_name = f"enrich_killed_{uuid.uuid4().hex[:8]}"
    child_url = f"{app_db}?application_name={app_name}"
    child_code = (
        "import sys, polars as pl\n"
        "from enrichment_assets.app_db.publish import publish_status\n"
        "publish_status(sys.argv[1], 'batch-a', pl.read_parquet(sys.argv[2]))\n"
    )

    with psycopg.connect(app_db) as blocker:
        # Hold the table: the child's COPY into its staging table goes through,
        # its upsert waits for this lock. That is where it gets killed.
        blocker.execute("LOCK TABLE conversation_status IN SHARE MODE")
        child = subprocess.Popen([sys.executable, "-c", child_code, child_url, str(newer)])
        try:
            backend = _wait_for_backend_blocked_in_upsert(app_db, app_name, child)
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        blocker.rollback()  # releases the lock: the orphaned upsert may now run

    _wait_for_backend_gone(app_db, backend)
    assert child.returncode == -signal.SIGKILL
    assert _status_rows(app_db) == before


def _wait_for_backend_blocked_in_upsert(url: str, app_name: str, child: subprocess.Popen) -> int:
    deadline = time.monotonic() + WAIT_LIMIT_S
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid, query FROM pg_stat_activity "
                "WHERE application_name = %s AND wait_event_type = 'Lock'",
                [app_name],
            ).fetchone()
            if row is not None:
                assert "INSERT INTO conversation_status" in row[1]
                return row[0]
            if child.poll() is not None:
                pytest.fail(f"the publishing process ended early (exit {child.returncode})")
            time.sleep(0.05)
    pytest.fail("the publishing process never reached its upsert")


def _wait_for_backend_gone(url: str, pid: int) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if not conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                return
            time.sleep(0.05)
    pytest.fail(f"the killed publisher's backend {pid} is still there")
