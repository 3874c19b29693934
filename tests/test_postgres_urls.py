"""PostgreSQL URLs in the forms users write, and one clear line for a malformed one.

`postgresql://` (Dagster's documented form) works for DAGSTER_PG_URL and ENRICH_APP_DB_URL
(tests/test_production.py runs the Dagster instance of deploy/dagster.yaml on a plain
`postgresql://` URL against the real PostgreSQL); here, what each form becomes and what the
`enrich` command says about a URL that is not one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from enrichment_assets.postgres_url import PostgresUrlError, libpq_url, sqlalchemy_url
from tests.cli import Invocation, enrich

REPO = Path(__file__).resolve().parents[1]
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("url", "for_dagster", "for_psycopg"),
    [
        ("postgresql://u:p@db:5432/dagster", "postgresql+psycopg2://u:p@db:5432/dagster",
         "postgresql://u:p@db:5432/dagster"),
        ("postgres://u@db/app", "postgresql+psycopg2://u@db/app", "postgresql://u@db/app"),
        ("postgresql+psycopg2://u@db/d", "postgresql+psycopg2://u@db/d", "postgresql://u@db/d"),
        ("postgresql+psycopg://u@db/d", "postgresql+psycopg2://u@db/d", "postgresql://u@db/d"),
        ("postgresql:///d?host=/run/pg", "postgresql+psycopg2:///d?host=/run/pg",
         "postgresql:///d?host=/run/pg"),
    ],
)  # fmt: skip
def test_standard_forms_get_the_driver_each_client_needs(
    url: str, for_dagster: str, for_psycopg: str
) -> None:
    assert sqlalchemy_url(url) == for_dagster
    assert libpq_url(url) == for_psycopg


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://u@db/d", "scheme 'mysql'"),
        ("db:5432/d", "scheme ''"),
        ("postgresql://u@db:port/d", "port is not a number"),
        ("postgresql:///d", "names no host"),
        ("  ", "empty"),
    ],
)
def test_malformed_url_says_what_is_wrong_without_the_password(url: str, problem: str) -> None:
    with pytest.raises(PostgresUrlError, match="DAGSTER_PG_URL is not a PostgreSQL URL") as error:
        sqlalchemy_url(url.replace("u@", "u:s3cret@"))
    assert problem in str(error.value) and "s3cret" not in str(error.value)


def _one_line_failure(done: Invocation) -> str:
    assert done.code == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_enrich_with_a_malformed_dagster_pg_url_fails_in_one_line(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql://dagster:s3cret@db:fivefourthreetwo/d")
    line = _one_line_failure(enrich(capsys, "report"))
    assert line.startswith("enrich: error: DAGSTER_PG_URL is not a PostgreSQL URL")
    assert "s3cret" not in line


@pytest.mark.parametrize(
    ("args", "variable"),
    [(("status", UNKNOWN_ID), "ENRICH_APP_DB_URL"), (("db", "upgrade"), "ENRICH_APP_DB_URL")],
)
def test_enrich_with_a_malformed_app_db_url_fails_in_one_line(
    args: tuple[str, ...],
    variable: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ENRICH_APP_DB_URL", "mysql://app@db/app")
    line = _one_line_failure(enrich(capsys, *args))
    assert line == (
        f"enrich: error: {variable} is not a PostgreSQL URL "
        "(postgresql://user[:password]@host[:port]/database): scheme 'mysql' is not one of "
        "postgresql, postgres, postgresql+psycopg, postgresql+psycopg2"
    )


def test_db_upgrade_url_option_is_checked_too(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_line_failure(enrich(capsys, "db", "upgrade", "--url", "host=db dbname='app"))
    assert line.startswith("enrich: error: --url is not a libpq connection string: ")
