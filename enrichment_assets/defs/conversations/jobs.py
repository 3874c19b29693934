"""The job of the conversation layers: raw → validated → enriched → normalized."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from enrichment_assets.defs.conversations.enriched import enriched_conversations
from enrichment_assets.defs.conversations.normalized import normalized_conversations
from enrichment_assets.defs.conversations.partitions import batch_partitions
from enrichment_assets.defs.conversations.raw import raw_conversations
from enrichment_assets.defs.conversations.validated import validated_conversations

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
