"""`health_alerts`: posts a health threshold's change of level to a webhook.

Each tick reads the latest `pipeline_health` materialization (its `levels` metadata: one
level per health threshold, the same as its checks) and compares it with the levels last
posted, which the sensor keeps in its cursor. A change (to CRITICAL, to WARNING, or back
to ok) is one post of Slack-compatible JSON (`alerts.slack_message`); an unchanged level
is never posted again. When the webhook is down the post fails within `timeout_s`, the
cursor keeps the old levels, and the next tick tries again: the sensor requests no run,
so nothing in the pipeline ever waits on it. Off (a skipped tick) when no URL is set.
"""

from __future__ import annotations

import json

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from enrichment_assets import settings as env_settings
from enrichment_assets.alerts import AlertDeliveryError, level_changes, post_json, slack_message
from enrichment_assets.defs.automation.settings import default_sensor_status
from enrichment_assets.defs.health.assets import HEALTH_ASSET, LEVELS_KEY
from enrichment_assets.defs.resources import ALERT_WEBHOOK_URL_ENV, AlertWebhookResource
from enrichment_assets.health_metrics import THRESHOLDS


def _posted_levels(cursor: str | None) -> dict[str, str]:
    """The levels last posted, from the cursor (none yet: every threshold was ok)."""
    if not cursor:
        return {}
    try:
        levels = json.loads(cursor).get("levels", {})
    except (ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in levels.items()} if isinstance(levels, dict) else {}


def health_alerts_tick(
    context: SensorEvaluationContext, webhook: AlertWebhookResource
) -> SensorResult | SkipReason:
    """One evaluation of `health_alerts`."""
    url = webhook.webhook_url
    if url is None:
        return SkipReason(f"alerts are off: {ALERT_WEBHOOK_URL_ENV} is not set")
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(HEALTH_ASSET)), limit=1
    ).records
    materialization = records[0].asset_materialization if records else None
    if materialization is None or LEVELS_KEY not in materialization.metadata:
        return SkipReason(f"{HEALTH_ASSET} has no levels yet")
    metadata = materialization.metadata
    levels = dict(metadata[LEVELS_KEY].value)  # type: ignore[arg-type]
    values = {
        t.metric: metadata[t.metric].value if t.metric in metadata else None for t in THRESHOLDS
    }
    posted = _posted_levels(context.cursor)
    changes = level_changes(
        posted,
        levels,
        values,
        {t.metric: t.rule() for t in THRESHOLDS},  # type: ignore[arg-type]
    )
    if not changes:
        return SkipReason("no health threshold changed level")
    payload = slack_message(changes, source=f"{HEALTH_ASSET} run {records[0].run_id[:8]}")
    try:
        status = post_json(url, payload, webhook.timeout_s)
    except AlertDeliveryError as error:
        # The cursor keeps the old levels: the next tick posts the change again.
        context.log.warning(f"health alert not delivered, retried next tick: {error}")
        return SkipReason(f"not delivered ({error}); retried next tick")
    for change in changes:
        context.log.info(f"posted {change.line()}")
    new_cursor = json.dumps({"levels": {**posted, **{c.metric: c.level for c in changes}}})
    return SensorResult(
        skip_reason=f"posted {len(changes)} level change(s), HTTP {status}", cursor=new_cursor
    )


@sensor(
    name="health_alerts",
    minimum_interval_seconds=env_settings.whole_number("ENRICH_ALERT_INTERVAL_S", 30),
    default_status=default_sensor_status(),
    description=(
        "Posts each pipeline_health threshold's change of level (CRITICAL, WARNING, recovery) "
        "to ENRICH_ALERT_WEBHOOK_URL as Slack-compatible JSON; off when unset."
    ),
)
def health_alerts(
    context: SensorEvaluationContext, alert_webhook: AlertWebhookResource
) -> SensorResult | SkipReason:
    """pipeline_health levels → one webhook post per change of level."""
    return health_alerts_tick(context, alert_webhook)
