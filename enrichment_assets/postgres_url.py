"""PostgreSQL URLs as users write them (`postgresql://user:pass@host:5432/db`), checked once.

Both databases take the standard form (also `postgres://`, or a SQLAlchemy driver name):
- the application database (`ENRICH_APP_DB_URL`) is reached with psycopg 3, which takes
  libpq's own `postgresql://` form (`libpq_url`);
- Dagster's storage (`DAGSTER_PG_URL`) goes through dagster-postgres and SQLAlchemy, which
  maps a bare `postgresql://` to psycopg 3; dagster-postgres 0.29's event log sends
  `NOTIFY run_events, :id`, a statement PostgreSQL takes with no server-side parameter
  (psycopg 3 binds them there: `syntax error at or near "$1"`). It gets the psycopg2
  driver, the one dagster-postgres is written for (`sqlalchemy_url`).

A URL that is not one says so in one line (`PostgresUrlError`), without its password.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
_FORM = "postgresql://user[:password]@host[:port]/database"


class PostgresUrlError(ValueError):
    """A database URL that is not a PostgreSQL URL (the message names the variable)."""


def _with_scheme(url: str, variable: str, scheme: str) -> str:
    parts = _checked(url, variable)
    return scheme + url.strip()[len(parts.scheme) :]


def _checked(url: str, variable: str) -> SplitResult:
    def problem(what: str) -> PostgresUrlError:
        return PostgresUrlError(f"{variable} is not a PostgreSQL URL ({_FORM}): {what}")

    if not url.strip():
        raise problem("it is empty")
    parts = urlsplit(url.strip())
    if "://" not in url or parts.scheme.lower() not in _SCHEMES:
        scheme = parts.scheme if "://" in url else ""
        raise problem(f"scheme {scheme!r} is not one of {', '.join(_SCHEMES)}")
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise problem("its port is not a number from 0 to 65535") from None
    if not parts.hostname and "host=" not in parts.query:
        raise problem("it names no host")
    return parts


def libpq_url(url: str, variable: str = "ENRICH_APP_DB_URL") -> str:
    """`url` in the form psycopg 3 (libpq) connects with: `postgresql://...`, or libpq's
    `host=... dbname=...` connection string as it is (checked by psycopg)."""
    if "://" not in url and "=" in url:
        import psycopg  # only for this form: 25 MB that a run without a database never loads

        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as error:
            first = (str(error).strip().splitlines() or [""])[0]
            message = f"{variable} is not a libpq connection string: {first}"
            raise PostgresUrlError(message) from None
        return url
    return _with_scheme(url, variable, "postgresql")


def sqlalchemy_url(url: str, variable: str = "DAGSTER_PG_URL") -> str:
    """`url` for dagster-postgres: `postgresql+psycopg2://...` (see the module's docstring)."""
    return _with_scheme(url, variable, "postgresql+psycopg2")
