"""`pipeline_health`: the data-quality and health report across all partitions.

It stays current by itself: `enrich run` / `enrich demo` materialize it after their
partitions (`materialize_pipeline_health`), and `pipeline_health_automation` requests it
once layer runs have updated any batch (`HEALTH_AUTOMATION`), checks included.
"""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
)

from enrichment_assets import settings as env_settings
from enrichment_assets.defs.automation.retry_state import flagged_partitions
from enrichment_assets.defs.automation.settings import default_sensor_status
from enrichment_assets.defs.conversations.enriched import enriched_conversations
from enrichment_assets.defs.conversations.normalized import normalized_conversations
from enrichment_assets.defs.conversations.raw import raw_conversations
from enrichment_assets.defs.conversations.validated import validated_conversations
from enrichment_assets.defs.metadata import path_value
from enrichment_assets.defs.resources import LakeResource, LLMResource
from enrichment_assets.defs.run_liveness import active_partitions
from enrichment_assets.health_metrics import CRITICAL, OK, THRESHOLDS, pipeline_health
from enrichment_assets.health_report import write_health_files
from enrichment_assets.low_confidence import LowConfidenceRule
from enrichment_assets.queries import layer_counts

HEALTH_ASSET = "pipeline_health"
HEALTH_JOB = "pipeline_health_job"
# Metadata key of the materialization: {threshold: level}, what the alert sensor reads.
LEVELS_KEY = "levels"

# Any layer partition materialized since the last request (a run stopped by a gate
# updates the layers before it, and changes the health as much as a completed one),
# none of them still in progress; never two health runs at once. Unlike `eager()`,
# a partition never normalized (its gate failed) does not hold the health back.
HEALTH_AUTOMATION = (
    (AutomationCondition.newly_missing() | AutomationCondition.any_deps_updated())
    .since_last_handled()
    .with_label("missing or a layer updated")
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("after layer runs")


@asset(
    name=HEALTH_ASSET,
    group_name="reports",
    kinds={"duckdb", "html"},
    # It reads every layer's statuses, so any layer's run can change it.
    deps=[
        raw_conversations,
        validated_conversations,
        enriched_conversations,
        normalized_conversations,
    ],
    automation_condition=HEALTH_AUTOMATION,
    check_specs=[
        AssetCheckSpec(
            t.metric,
            asset=HEALTH_ASSET,
            blocking=False,
            description=f'{t.description}: {t.rule()} (README, "Quality gates and health").',
        )
        for t in THRESHOLDS
    ],
)
def pipeline_health_asset(
    context: AssetExecutionContext, lake: LakeResource, enricher: LLMResource
) -> MaterializeResult:
    """Health of the whole pipeline, computed in DuckDB over every partition's Parquet.

    Completeness rate, backlog, failure rate, mean quality score, confidence
    distribution, records processed per hour, time from raw stored to enriched
    (p50/p95), partitions blocked by a gate and partitions flagged for a person.
    Each health threshold (README, "Quality gates and health") is an asset check: WARN
    at the warning level, ERROR at the critical one; they report, they never block data. Writes
    `reports/pipeline_health.json` and the charts page `reports/pipeline_health.html`.
    """
    store = lake.lake
    health = pipeline_health(
        store,
        active_partitions(context.instance, store),
        flagged_partitions(context.instance),
        low_confidence=LowConfidenceRule.from_settings(enricher.settings()),
    )
    counts = layer_counts(store)["total"]
    json_path, html_path = write_health_files(store, health, counts)
    metrics = health["metrics"]
    context.log.info(f"pipeline health: {health['overall']} ({health['levels']})")
    return MaterializeResult(
        metadata={
            "overall": health["overall"],
            LEVELS_KEY: MetadataValue.json(health["levels"]),
            "conversations": metrics["conversations"],
            "partitions": metrics["partitions"],
            "completeness_rate": _number(metrics["completeness_rate"]),
            "backlog": metrics["backlog"],
            "failure_rate": _number(metrics["failure_rate"]),
            "quality_score": _number(metrics["quality_score"]),
            "records_per_hour": _number(metrics["records_per_hour"]),
            "seconds_to_enriched_p50": _number(metrics["seconds_to_enriched"]["p50"]),
            "seconds_to_enriched_p95": _number(metrics["seconds_to_enriched"]["p95"]),
            "confidence_histogram": MetadataValue.json(metrics["confidence_histogram"]),
            "gate_blocked_partitions": MetadataValue.json(metrics["gate_blocked_partitions"]),
            "flagged_partitions": MetadataValue.json(metrics["flagged_partitions"]),
            "layer_counts": MetadataValue.json(counts),
            "report_json": path_value(json_path),
            "report_html": path_value(html_path),
        },
        check_results=_threshold_checks(health),
    )


def _threshold_checks(health: dict) -> list[AssetCheckResult]:
    """One check per health threshold: WARN at its warning level, ERROR at the critical one."""
    return [
        AssetCheckResult(
            check_name=t.metric,
            asset_key=HEALTH_ASSET,
            passed=health["levels"][t.metric] == OK,
            severity=(
                AssetCheckSeverity.ERROR
                if health["levels"][t.metric] == CRITICAL
                else AssetCheckSeverity.WARN
            ),
            metadata={
                "value": _number(health["metrics"][t.metric]),
                "level": health["levels"][t.metric],
                "threshold": t.rule(),
            },
        )
        for t in THRESHOLDS
    ]


def _number(value: float | None) -> MetadataValue:
    return MetadataValue.float(float(value)) if value is not None else MetadataValue.null()


pipeline_health_job = define_asset_job(
    HEALTH_JOB,
    selection=AssetSelection.assets(pipeline_health_asset),
    description="The health report over every partition, and its threshold checks.",
)

pipeline_health_automation = AutomationConditionSensorDefinition(
    "pipeline_health_automation",
    target=AssetSelection.assets(pipeline_health_asset),
    default_status=default_sensor_status(),
    minimum_interval_seconds=env_settings.whole_number(
        "ENRICH_HEALTH_AUTOMATION_INTERVAL_S", 30, minimum=1
    ),
    description="Re-computes pipeline_health (and its checks) once layer runs have updated "
    "a batch.",
)
