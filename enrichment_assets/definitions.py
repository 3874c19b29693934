"""The one `Definitions` of the code location: assets, checks, jobs, resources."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from enrichment_assets.defs.automation import SENSORS
from enrichment_assets.defs.conversations.enriched import enriched_conversations
from enrichment_assets.defs.conversations.normalized import normalized_conversations
from enrichment_assets.defs.conversations.partitions import batch_partitions
from enrichment_assets.defs.conversations.raw import raw_conversations
from enrichment_assets.defs.conversations.validated import validated_conversations
from enrichment_assets.defs.dataset.assets import (
    training_dataset,
    training_dataset_automation,
    training_dataset_job,
)
from enrichment_assets.defs.health.alerts import health_alerts
from enrichment_assets.defs.health.assets import (
    pipeline_health_asset,
    pipeline_health_automation,
    pipeline_health_job,
)
from enrichment_assets.defs.resources import (
    AlertWebhookResource,
    LakeResource,
    PiiRedactionResource,
    app_database,
)
from enrichment_assets.defs.summaries.assets import conversation_summaries
from enrichment_assets.defs.summaries.automation import (
    stale_summaries,
    summaries_daily,
    summaries_job,
)
from enrichment_assets.enrichers.settings import LLMResource

# One application database resource: the assets' own, and where the lake publishes statuses.
APP_DB = app_database()
LAYER_ASSETS = [
    raw_conversations,
    validated_conversations,
    enriched_conversations,
    normalized_conversations,
]

# Every layer of one batch partition, raw to training-ready (and their checks).
conversations_pipeline = define_asset_job(
    "conversations_pipeline",
    selection=AssetSelection.assets(*LAYER_ASSETS),
    partitions_def=batch_partitions,
    description="Raw → validated → enriched → normalized for one batch partition.",
)

defs = Definitions(
    assets=[*LAYER_ASSETS, pipeline_health_asset, conversation_summaries, training_dataset],
    jobs=[conversations_pipeline, summaries_job, training_dataset_job, pipeline_health_job],
    sensors=[
        *SENSORS,
        stale_summaries,
        training_dataset_automation,
        pipeline_health_automation,
        health_alerts,
    ],
    schedules=[summaries_daily],
    resources={
        "lake": LakeResource(app_db=APP_DB),
        # ENRICH_ENRICHER, ENRICH_LLM_* read when the code location loads; key as EnvVar.
        "enricher": LLMResource.from_env(),
        "app_db": APP_DB,
        # ENRICH_PII_MODE, ENRICH_PII_PHONE_REGION read when a run starts.
        "pii": PiiRedactionResource(),
        # ENRICH_ALERT_WEBHOOK_URL read when the sensor ticks; unset = alerts off.
        "alert_webhook": AlertWebhookResource(),
    },
)
