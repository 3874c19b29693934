"""Dagster resources: the lake (data folder), the enricher settings, the application database,
PII redaction."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource, Definitions, EnvVar, InitResourceContext, definitions
from pydantic import Field, PrivateAttr

from enrichment_assets import settings as env_settings
from enrichment_assets.app_db import APP_DB_URL_ENV
from enrichment_assets.defs.run_liveness import heartbeat
from enrichment_assets.enrichers.base import Enricher
from enrichment_assets.enrichers.budget import SpendBudget
from enrichment_assets.enrichers.defaults import (
    DEFAULT_BREAKER_WINDOW,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_RETRY_BUDGET_S,
)
from enrichment_assets.enrichers.pricing import DEFAULT_EXPECTED_COMPLETION_TOKENS
from enrichment_assets.enrichers.settings import SHARED_FIELDS, LLMSettings, parse_prices
from enrichment_assets.ingest.limits import RecordLimits
from enrichment_assets.lake import Lake, default_data_dir, default_landing_dir
from enrichment_assets.object_store import StoreSettings, mirror_of, synced
from enrichment_assets.postgres_url import libpq_url
from enrichment_assets.redaction import (
    DEFAULT_MODE,
    DEFAULT_PHONE_REGION,
    PiiMode,
    parse_mode,
    parse_region,
    phone_region_from_env,
    pii_mode_from_env,
)
from enrichment_assets.workers import default_workers, kept_pools


class AppDatabaseResource(ConfigurableResource):
    """The application's PostgreSQL database: reference data in, statuses and summaries out.

    Optional: with no URL the pipeline runs on the embedded default (seed files,
    nothing published). An empty `url` takes `ENRICH_APP_DB_URL`, read when it is used;
    `app_database()` wires the variable as an `EnvVar` (never written into the definitions).
    """

    url: str = Field(
        default="",
        description="postgresql:// URL of the application database; empty = ENRICH_APP_DB_URL, "
        "or not configured.",
    )

    @property
    def app_db_url(self) -> str | None:
        """The URL for psycopg (`postgres_url.libpq_url`), or None when not configured."""
        url = self.url or env_settings.raw(APP_DB_URL_ENV)
        return libpq_url(url, APP_DB_URL_ENV) if url else None


def app_database() -> AppDatabaseResource:
    """The resource, from `ENRICH_APP_DB_URL` when it is set."""
    if env_settings.raw(APP_DB_URL_ENV):
        return AppDatabaseResource(url=EnvVar(APP_DB_URL_ENV))
    return AppDatabaseResource()


class LakeResource(ConfigurableResource):
    """The data folder: Parquet per layer and partition, landing store, exports.

    Defaults to `ENRICH_DATA_DIR` (or `./data`), read when a run starts. Its statuses are
    published to `app_db` (the application database resource) when that is configured.
    """

    app_db: AppDatabaseResource | None = Field(
        default=None,
        description="Where statuses are published; unset = AppDatabaseResource() "
        "(ENRICH_APP_DB_URL, or nowhere).",
    )

    data_dir: str = Field(
        default="",
        description="Root of the data folder; empty = ENRICH_DATA_DIR, or ./data.",
    )
    chunk_rows: int = Field(
        default=5_000,
        description="Conversations processed per chunk: bounds memory whatever the input size.",
    )
    enrich_chunk_rows: int = Field(
        default=10_000,
        description=(
            "Conversations per enricher call: set-based enrichers (heuristic) run faster on "
            "larger chunks; memory stays bounded by this, not by the partition."
        ),
    )

    workers: int = Field(
        default=0,
        description=(
            "Processes for the Python-bound work of a chunk (parsing, validation, text "
            "repair); 0 = ENRICH_WORKERS, or one per CPU; 1 = all in the run's process."
        ),
    )

    max_record_bytes: int = Field(
        default=0,
        description="Bytes of one record at most (a line, an array element); 0 = "
        "ENRICH_MAX_RECORD_BYTES, or 16 MiB. A longer one is quarantined (record_too_large).",
    )
    max_nesting_depth: int = Field(
        default=0,
        description="Nesting depth of one record at most (1 to 190); 0 = "
        "ENRICH_MAX_NESTING_DEPTH, or 64. A deeper one is quarantined (nesting_too_deep).",
    )
    max_messages: int = Field(
        default=0,
        description="Messages of one conversation at most; 0 = ENRICH_MAX_MESSAGES, or "
        "10,000. More are quarantined (too_many_messages).",
    )
    max_message_chars: int = Field(
        default=0,
        description="Characters of one message at most; 0 = ENRICH_MAX_MESSAGE_CHARS, or "
        "4,000,000. A longer one is quarantined (message_too_long).",
    )

    lake_uri: str = Field(
        default="",
        description="Where the lake lives: a local folder or s3://bucket/prefix; empty = "
        "ENRICH_LAKE_URI, or the data folder. With s3://, data_dir is the local working copy.",
    )
    s3_endpoint: str = Field(
        default="",
        description="http(s) address of an S3-compatible store; empty = ENRICH_S3_ENDPOINT, "
        "or AWS.",
    )
    s3_access_key_id: str = Field(
        default="", description="Object-store access key; empty = AWS_ACCESS_KEY_ID (or ~/.aws)."
    )
    s3_secret_access_key: str = Field(
        default="",
        description="Object-store secret key; empty = AWS_SECRET_ACCESS_KEY (or ~/.aws).",
    )

    @property
    def store(self) -> StoreSettings:
        """Where the lake lives (`object_store`): these fields, else the environment."""
        return StoreSettings.from_env(
            self.lake_uri, self.s3_endpoint, self.s3_access_key_id, self.s3_secret_access_key
        )

    @property
    def limits(self) -> RecordLimits:
        """The record limits of ingest: these fields, else the environment, else defaults."""
        return RecordLimits.from_env(
            max_record_bytes=self.max_record_bytes,
            max_nesting_depth=self.max_nesting_depth,
            max_messages=self.max_messages,
            max_message_chars=self.max_message_chars,
        )

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator[LakeResource]:
        """While a run uses the lake, it says it is alive (`run_liveness.heartbeat`), so that
        a run whose process dies is found and retried. With the lake on object storage, the
        working copy is pulled first and what the run wrote pushed at the end. The worker
        processes a layer starts serve the run's next layers too (`workers.kept_pools`)."""
        run = context.dagster_run
        with synced(mirror_of(self.lake.data_dir, self.store)), kept_pools():
            if context.instance is None or run is None:
                yield self
                return
            with heartbeat(context.instance, run.run_id):
                yield self

    @property
    def worker_count(self) -> int:
        return self.workers or default_workers()

    @property
    def lake(self) -> Lake:
        app_db = self.app_db or AppDatabaseResource()
        location = self.store.location() if self.lake_uri else None
        if isinstance(location, Path):  # a local lake: the data folder itself
            data_dir = location
        else:
            data_dir = Path(self.data_dir) if self.data_dir else default_data_dir()
        return Lake(
            data_dir, app_db_url=app_db.app_db_url, landing_dir=default_landing_dir(data_dir)
        )


class PiiRedactionResource(ConfigurableResource):
    """Which texts have their personal data replaced by placeholders (`redaction.py`).

    `mode`: `off`; `egress` (what is sent to an LLM endpoint); `export` (that, and the
    training dataset's lines). Empty fields take `ENRICH_PII_MODE` (default egress) and
    `ENRICH_PII_PHONE_REGION` (default US), read when a run starts.
    """

    mode: str = Field(default="", description="off | egress | export; empty = ENRICH_PII_MODE.")
    phone_region: str = Field(
        default="",
        description="Region of phone numbers written without a country code (US, DE, ...; "
        "none = international numbers only); empty = ENRICH_PII_PHONE_REGION, or US.",
    )

    @property
    def pii_mode(self) -> PiiMode:
        """The mode (ValueError naming the setting when it is not one of the three)."""
        return parse_mode(self.mode, "pii.mode") if self.mode else pii_mode_from_env()

    @property
    def region(self) -> str:
        return (
            parse_region(self.phone_region, "pii.phone_region")
            if self.phone_region
            else phone_region_from_env()
        )


ALERT_WEBHOOK_URL_ENV = "ENRICH_ALERT_WEBHOOK_URL"


class AlertWebhookResource(ConfigurableResource):
    """Where health threshold level changes are posted (Slack-compatible JSON).

    Empty `url` = `ENRICH_ALERT_WEBHOOK_URL`, read when the sensor ticks; unset both, and
    alerts are off. `timeout_s` bounds one post, so a webhook that is down never holds
    the sensor (the change is posted on a later tick).
    """

    url: str = Field(
        default="",
        description="Incoming-webhook URL (Slack or compatible); empty = "
        "ENRICH_ALERT_WEBHOOK_URL; both unset = alerts off.",
    )
    timeout_s: float = Field(
        default=5.0, description="Seconds one post may take (connect and answer) at most."
    )

    @property
    def webhook_url(self) -> str | None:
        return (self.url or env_settings.raw(ALERT_WEBHOOK_URL_ENV) or "").strip() or None


class LLMResource(ConfigurableResource):
    """The enricher and its LLM endpoint, as Dagster resource config (see LLMSettings)."""

    enricher: str = Field(default="heuristic", description="heuristic | openai")
    base_url: str | None = Field(default=None, description="OpenAI-compatible /v1 URL")
    model: str = "gpt-4o-mini"
    api_key: str | None = Field(
        default=None, repr=False, description='Set as EnvVar("ENRICH_LLM_API_KEY"), never inline.'
    )
    concurrency: int = 16
    timeout_s: float = Field(
        default=60.0, description="Total deadline of one request: connect, reads, whole body."
    )
    max_attempts: int = 6
    retry_budget_s: float = Field(
        default=DEFAULT_RETRY_BUDGET_S,
        description="Seconds a run may wait on retries alone, once every conversation "
        "had its first answer; then the failing ones are left to the failed-partitions sensor.",
    )
    breaker_window: int = Field(
        default=DEFAULT_BREAKER_WINDOW,
        description="Consecutive failed conversations after which the run sends nothing "
        "more (endpoint unavailable); 0: never.",
    )
    max_response_bytes: int = Field(
        default=DEFAULT_MAX_RESPONSE_BYTES, description="Cap on one answer's body, in bytes."
    )
    rpm: int | None = None
    tpm: int | None = None
    mode: str = Field(
        default="online",
        description="online | batch (the Batch API: the run submits and ends, the llm_batches "
        "sensor applies the results) | batch_wait (the Batch API, polled inside the run)",
    )
    prices_json: str | None = Field(default=None, description="ENRICH_LLM_PRICES override")
    budget_usd: float | None = Field(
        default=None,
        description="USD one run may spend (ENRICH_LLM_BUDGET_USD); over the estimate nothing "
        "is sent, and sending stops when the measured spend reaches it. None: no limit.",
    )
    daily_budget_usd: float | None = Field(
        default=None, description="USD all runs of one UTC day may spend; None: no limit."
    )
    expected_completion_tokens: int = Field(
        default=DEFAULT_EXPECTED_COMPLETION_TOKENS,
        description="Completion tokens per request the cost estimate assumes.",
    )
    escalation_model: str | None = Field(
        default=None,
        description="Model that re-asks low-confidence conversations; None: the same model.",
    )
    low_confidence_below: float = Field(
        default=0.7, description="A confidence below this is re-asked (low-confidence rule)."
    )
    low_confidence_after_hours: float = Field(
        default=24.0, description="Hours after its last attempt a low-confidence one is re-asked."
    )
    low_confidence_max_attempts: int = Field(
        default=5, description="Attempts in all (the first included) of the low-confidence rule."
    )

    _settings: LLMSettings | None = PrivateAttr(default=None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LLMResource:
        """Resource config from the environment; the key stays an EnvVar reference."""
        env = env_settings.environment() if env is None else env
        settings = LLMSettings.from_env(env)
        key_var = next((n for n in ("ENRICH_LLM_API_KEY", "OPENAI_API_KEY") if env.get(n)), None)
        return cls(
            **{name: getattr(settings, name) for name in SHARED_FIELDS},
            api_key=EnvVar(key_var) if key_var else None,
            prices_json=env.get("ENRICH_LLM_PRICES") or None,
        )

    def settings(self) -> LLMSettings:
        """The validated settings (ValueError with the offending field when invalid)."""
        return LLMSettings(
            **{name: getattr(self, name) for name in SHARED_FIELDS},
            api_key=self.api_key,
            prices=parse_prices(self.prices_json),
        )

    def build_enricher(
        self,
        cache_dir: Path | None = None,
        budget: SpendBudget | None = None,
        *,
        pii_mode: PiiMode = DEFAULT_MODE,
        phone_region: str = DEFAULT_PHONE_REGION,
        app_db_url: str | None = None,
    ) -> Enricher:
        """The configured enricher (see LLMSettings.build_enricher)."""
        return self.settings().build_enricher(
            cache_dir, budget, pii_mode=pii_mode, phone_region=phone_region, app_db_url=app_db_url
        )


@definitions
def resources() -> Definitions:
    """Every resource of the code location, bound by key to the assets and sensors."""
    # One application database resource: the assets' own, and where the lake publishes.
    app_db = app_database()
    return Definitions(
        resources={
            "lake": LakeResource(app_db=app_db),
            # ENRICH_ENRICHER, ENRICH_LLM_* read when the code location loads; key as EnvVar.
            "enricher": LLMResource.from_env(),
            "app_db": app_db,
            # ENRICH_PII_MODE, ENRICH_PII_PHONE_REGION read when a run starts.
            "pii": PiiRedactionResource(),
            # ENRICH_ALERT_WEBHOOK_URL read when the sensor ticks; unset = alerts off.
            "alert_webhook": AlertWebhookResource(),
        }
    )
