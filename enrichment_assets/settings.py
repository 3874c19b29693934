"""Every environment variable the product reads, read here and only here.

`VARIABLES` names each one with what it sets (README, "Configuration", has the details);
the readers below refuse a name that is not in it, so a new variable is documented here
before it can be read. The Dagster resources (`enrichment_assets/defs/resources.py`) and
the sensors' settings take these values as their defaults; the library gets them as
arguments, or from one of these readers where its caller has no other source.

Three families are read whole, through `environment()`, by the one function that knows
the family's names: `LLMSettings.from_env` (`ENRICH_ENRICHER`, `ENRICH_LLM_*`,
`ENRICH_LOW_CONFIDENCE_*`, `OPENAI_API_KEY`), the PII settings (`ENRICH_PII_*`,
`redaction.py`) and the settings fingerprint (every `ENRICH_*`, `fingerprints.py`).

The writes happen here too, on purpose: `ENRICH_DAGSTER_DIR` for the embedded instance's
dagster.yaml (`use_instance_dir`), `GX_ANALYTICS_ENABLED=false` for Great Expectations
(`disable_gx_analytics`), and third-party defaults a user's own value overrides
(`default_to`: the S3 checksum settings, Polars' jemalloc options).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date

VARIABLES: dict[str, str] = {
    # Folders and instance.
    "ENRICH_DATA_DIR": "the data folder (default ./data)",
    "ENRICH_LANDING_DIR": "the landing folder the new_raw_files sensor watches (<data>/landing)",
    "ENRICH_DAGSTER_DIR": "the embedded instance's folder, set by `enrich` for dagster.yaml",
    "DAGSTER_HOME": "another Dagster instance instead of the embedded one",
    "DAGSTER_PG_URL": "PostgreSQL URL of the production instance (deploy/dagster.yaml)",
    "ENRICH_APP_DB_URL": "postgresql:// URL of the application database (unset: none)",
    "ENRICH_LAKE_URI": "where the lake is: a local folder or s3://bucket/prefix",
    "ENRICH_S3_ENDPOINT": "http(s)://host:port of an S3-compatible store (unset: AWS)",
    "AWS_REGION": "the object store's region (else AWS_DEFAULT_REGION, else us-east-1)",
    "AWS_DEFAULT_REGION": "the object store's region when AWS_REGION is not set",
    # Processing.
    "ENRICH_WORKERS": "worker processes (default: the CPUs this process may use)",
    "ENRICH_GATE_CHUNK_ROWS": "rows per chunk of the GX quality gates",
    "ENRICH_GATE_FRAME_ROWS": "largest partition a GX quality gate judges on one frame",
    "ENRICH_MAX_RECORD_BYTES": "largest input record, in bytes",
    "ENRICH_MAX_NESTING_DEPTH": "deepest JSON nesting of an input record",
    "ENRICH_MAX_MESSAGES": "most messages in one conversation",
    "ENRICH_MAX_MESSAGE_CHARS": "longest message, in characters",
    "ENRICH_PII_MODE": "off | egress | export: where PII is redacted",
    "ENRICH_PII_PHONE_REGION": "ISO 3166 region for phone numbers (or none)",
    "ENRICH_DEBUG": "set: `enrich` shows tracebacks",
    "MALLOC_ARENA_MAX": "glibc's arena cap; `enrich` sets its own unless this is set",
    "_RJEM_MALLOC_CONF": "Polars' jemalloc options; `enrich` has freed pages returned at once",
    # The enricher and its LLM endpoint (read whole by LLMSettings.from_env).
    "ENRICH_ENRICHER": "heuristic | openai",
    "ENRICH_LLM_BASE_URL": "OpenAI-compatible /v1 URL",
    "ENRICH_LLM_MODEL": "model name",
    "ENRICH_LLM_API_KEY": "API key (else OPENAI_API_KEY)",
    "OPENAI_API_KEY": "API key when ENRICH_LLM_API_KEY is not set",
    "ENRICH_LLM_CONCURRENCY": "requests in flight",
    "ENRICH_LLM_TIMEOUT_S": "deadline of one request",
    "ENRICH_LLM_MAX_ATTEMPTS": "attempts per conversation",
    "ENRICH_LLM_RETRY_BUDGET_S": "seconds a run may wait on retries",
    "ENRICH_LLM_BREAKER_WINDOW": "consecutive failures that stop a run's requests",
    "ENRICH_LLM_MAX_RESPONSE_BYTES": "cap on one answer's body",
    "ENRICH_LLM_RPM": "requests per minute",
    "ENRICH_LLM_TPM": "tokens per minute",
    "ENRICH_LLM_MODE": "online | batch | batch_wait",
    "ENRICH_LLM_PRICES": "JSON price override per model",
    "ENRICH_LLM_BUDGET_USD": "USD one run may spend",
    "ENRICH_LLM_DAILY_BUDGET_USD": "USD all runs of one UTC day may spend",
    "ENRICH_LLM_EXPECTED_COMPLETION_TOKENS": "completion tokens the cost estimate assumes",
    "ENRICH_LLM_ESCALATION_MODEL": "model that re-asks low-confidence conversations",
    "ENRICH_LLM_BATCH_POLL_S": "interval of the llm_batches sensor",
    "ENRICH_LLM_BATCH_MAX_POLLS": "polls of one LLM batch before it is given up",
    "ENRICH_LOW_CONFIDENCE_BELOW": "confidence under which a conversation is re-asked",
    "ENRICH_LOW_CONFIDENCE_AFTER_HOURS": "hours before a low-confidence one is re-asked",
    "ENRICH_LOW_CONFIDENCE_MAX_ATTEMPTS": "attempts in all of the low-confidence rule",
    "ENRICH_LOW_CONFIDENCE_INTERVAL_S": "interval of the low_confidence sensor",
    # Sensors and schedules.
    "ENRICH_SENSORS_DEFAULT_STATUS": "running | stopped: the sensors' default status",
    "ENRICH_SENSOR_RUN_EXECUTOR": "default | in_process: executor of the runs sensors request",
    "ENRICH_NEW_FILES_INTERVAL_S": "interval of the new_raw_files sensor",
    "ENRICH_NEW_FILES_SETTLE_S": "seconds a landed file must stay unchanged",
    "ENRICH_NEW_FILES_MAX_BATCHES_PER_TICK": "batches one new_raw_files tick registers",
    "ENRICH_BATCH_MAX_FILES": "files per batch partition",
    "ENRICH_BATCH_MAX_BYTES": "bytes per batch partition",
    "ENRICH_RETRY_INTERVAL_S": "interval of the failed_partitions sensor",
    "ENRICH_RETRY_BACKOFF_S": "comma-separated waits before each retry",
    "ENRICH_RETRY_MAX_RUNS_PER_TICK": "runs one failed_partitions tick looks at",
    "ENRICH_RETRY_MAX_REQUESTS_PER_TICK": "retries one failed_partitions tick requests",
    "ENRICH_NEVER_RAN_GRACE_S": "seconds before a registered, never-run partition is retried",
    "ENRICH_HEALTH_AUTOMATION_INTERVAL_S": "interval of the pipeline_health automation",
    "ENRICH_ALERT_INTERVAL_S": "interval of the health_alerts sensor",
    "ENRICH_ALERT_WEBHOOK_URL": "webhook the health alerts are posted to (unset: off)",
    "ENRICH_DATASET_AUTOMATION_INTERVAL_S": "interval of the training dataset automation",
    "ENRICH_STALE_SUMMARIES_INTERVAL_S": "interval of the stale_summaries sensor",
    "ENRICH_STALE_SUMMARIES_MAX_BATCHES_PER_TICK": "batches one stale_summaries tick reads",
    "ENRICH_SUMMARIES_SCHEDULE_MINUTE": "minute past 00:00 UTC of the summaries schedule",
    "ENRICH_SUMMARIES_START_DATE": "YYYY-MM-DD: no earlier day is summarized",
    "ENRICH_SUMMARIES_MIN_MESSAGES": "messages a user-window needs to be summarized",
    "ENRICH_SUMMARIES_WINDOW_HOURS": "summary window length, a divisor of 24",
    # Fault injection, for the crash-safety tests only.
    "ENRICH_TEST_CRASH_AT": "fault point at which the process dies",
    "ENRICH_TEST_ENOSPC_AT": "fault point at which a write fails with ENOSPC",
    "ENRICH_TEST_PAUSE_AT": "fault point at which the process waits for a file",
    "ENRICH_TEST_PAUSE_FILE": "the file a paused process writes and waits on",
}


def _known(name: str) -> str:
    if name not in VARIABLES:
        raise KeyError(f"{name}: not a documented setting (enrichment_assets/settings.py)")
    return name


def raw(name: str) -> str | None:
    """The variable's value as it is, None when unset."""
    return os.environ.get(_known(name))


def text(name: str, default: str = "") -> str:
    """The variable's value stripped, or `default` when it is unset or blank."""
    return (raw(name) or "").strip() or default


def is_set(name: str) -> bool:
    """Whether the variable holds a non-blank value."""
    return bool(text(name))


def whole_number(name: str, default: int, minimum: int = 1) -> int:
    """A whole number (ValueError naming the variable when bad)."""
    value_text = text(name)
    if not value_text:
        return default
    try:
        value = int(value_text)
    except ValueError:
        raise ValueError(f"{name}={value_text!r}: expected a whole number") from None
    if value < minimum:
        raise ValueError(f"{name}={value_text!r}: expected at least {minimum}")
    return value


def seconds_list(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """Comma-separated non-negative seconds (ValueError naming the variable when bad)."""
    value_text = text(name)
    if not value_text:
        return default
    try:
        values = tuple(int(part) for part in value_text.split(","))
    except ValueError:
        raise ValueError(f"{name}={value_text!r}: expected comma-separated seconds") from None
    if not values or any(v < 0 for v in values):
        raise ValueError(f"{name}={value_text!r}: expected at least one non-negative number")
    return values


def iso_date(name: str) -> date | None:
    """A YYYY-MM-DD date, None when unset (ValueError naming the variable when bad)."""
    value_text = text(name)
    if not value_text:
        return None
    try:
        return date.fromisoformat(value_text)
    except ValueError:
        raise ValueError(f"{name}={value_text!r}: expected YYYY-MM-DD") from None


def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    """One of `allowed` (lower case), `default` when unset (ValueError naming it when bad)."""
    value = text(name, default).lower()
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected {' or '.join(allowed)}")
    return value


def environment() -> Mapping[str, str]:
    """The whole environment, for the three readers of a family (module docstring)."""
    return os.environ


def use_instance_dir(path: str) -> None:
    """Point the embedded instance's dagster.yaml (`ENRICH_DAGSTER_DIR`) at `path`."""
    os.environ[_known("ENRICH_DAGSTER_DIR")] = path


def default_to(name: str, value: str) -> None:
    """Set a third-party library's variable unless the user set it (the S3 checksum
    defaults of `object_store`, Polars' jemalloc options of `cli.malloc_arenas`)."""
    os.environ.setdefault(name, value)


def disable_gx_analytics() -> None:
    """Great Expectations sends usage statistics unless told not to (an explicit
    GX_ANALYTICS_ENABLED is left alone)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
