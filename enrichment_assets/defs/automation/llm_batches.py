"""`llm_batches`: poll the open LLM batches; when a partition's have all ended, apply them.

In the Batch API mode (`ENRICH_LLM_MODE=batch`) a run of the enriched layer submits its
partition's requests, records the batches (`enrichers/batch_ledger.py`) and ends. Each
tick this sensor asks the endpoint for the status of every recorded batch (one GET each,
at most `ENRICH_LLM_BATCH_MAX_POLLS` per tick, taking up where the last tick stopped:
the cursor) and, for a partition whose batches have all ended (completed, failed,
expired or cancelled alike), requests the run that downloads and applies their results:
the enriched and normalized layers, with the submitting run's scope, so the rest of the
pipeline follows as in the online mode. It writes nothing: the apply run reads the
batches again and removes the record once its layer is written.

The run key names the partition and its batch ids: the same batches are never applied
twice by this sensor. An apply run that fails is the failed-partitions sensor's to retry
(its run keys are per failed run, so nothing here blocks them); the submitting run's
retry count travels with the apply run, so a line that always fails still ends flagged
for a person after the last try.
"""

from __future__ import annotations

import orjson
from dagster import RunRequest, SensorEvaluationContext, SensorResult, sensor

from enrichment_assets import settings as env_settings
from enrichment_assets.defs.automation.failed_partitions import LLM_BATCH_TRIGGER
from enrichment_assets.defs.automation.low_confidence import REASKED_ASSETS
from enrichment_assets.defs.automation.new_raw_files import PIPELINE_JOB, TRIGGER_TAG
from enrichment_assets.defs.automation.settings import default_sensor_status, requested_run_config
from enrichment_assets.defs.resources import LakeResource, LLMResource
from enrichment_assets.enrichers.batch_ledger import PartitionBatches, open_submissions
from enrichment_assets.enrichers.settings import LLMSettings
from enrichment_assets.lake import Lake
from enrichment_assets.locks import claimed_partitions

BATCH_IDS_TAG = "enrich/llm_batch_ids"


def apply_request(record: PartitionBatches) -> RunRequest:
    """The run that applies `record`'s ended batches to its partition."""
    scope = {name: value for name, value in record.scope.items() if value}
    run_config = requested_run_config()
    if scope:
        run_config = {**run_config, "ops": {"enriched_conversations": {"config": scope}}}
    return RunRequest(
        partition_key=record.partition,
        run_key=record.run_key(),
        asset_selection=list(REASKED_ASSETS),
        run_config=run_config,
        tags={
            **record.tags,  # the retry attempt it answers, if any (failed_partitions)
            TRIGGER_TAG: LLM_BATCH_TRIGGER,
            BATCH_IDS_TAG: ",".join(record.batch_ids)[:4000],
        },
    )


def _rotated(records: list[PartitionBatches], after: str | None) -> list[PartitionBatches]:
    """`records` starting after the partition the last tick stopped at."""
    keys = [record.partition for record in records]
    start = keys.index(after) + 1 if after in keys else 0
    return records[start:] + records[:start]


def llm_batches_tick(
    context: SensorEvaluationContext, lake: Lake, settings: LLMSettings, *, max_polls: int
) -> SensorResult:
    """One evaluation of `llm_batches` (the settings name the endpoint to poll)."""
    from enrichment_assets.enrichers.batch_submission import poll_batch_statuses
    from enrichment_assets.enrichers.openai import OpenAIEnricher

    records = open_submissions(lake.data_dir)
    if not records:
        return SensorResult(skip_reason="no open LLM batches")
    enricher = settings.build_enricher()
    if not isinstance(enricher, OpenAIEnricher):
        return SensorResult(
            skip_reason=f"{len(records)} partition(s) wait for LLM batches, but the enricher "
            f"is {settings.enricher}: set ENRICH_ENRICHER=openai and its endpoint to apply them"
        )
    after = orjson.loads(context.cursor).get("after") if context.cursor else None
    claimed = claimed_partitions(lake.data_dir)
    requests, running, polled, last = [], 0, 0, after
    for record in _rotated(records, after):
        if record.partition in claimed:
            continue  # a live command is at it: it applies the batches itself
        if polled + len(record.batch_ids) > max_polls and polled:
            break  # the rest next tick
        try:
            statuses = poll_batch_statuses(enricher, record)
        except Exception as error:  # the endpoint is down: this partition waits a tick
            context.log.warning(
                f"partition {record.partition}: LLM batches not polled: "
                f"{enricher.one_line(f'{type(error).__name__}: {error}')}"
            )
            running += 1
            continue
        polled, last = polled + len(statuses), record.partition
        for submitted in record.batches:
            submitted.status = statuses.get(submitted.batch_id or "", submitted.status)
        if record.batches and all(batch.ended for batch in record.batches):
            context.log.info(
                f"partition {record.partition}: LLM batches ended ({_describe(statuses)}); "
                "requesting the run that applies them"
            )
            requests.append(apply_request(record))
        else:
            running += 1
            context.log.info(f"partition {record.partition}: waiting ({_describe(statuses)})")
    cursor = orjson.dumps({"after": last}).decode()
    if not requests:
        return SensorResult(
            skip_reason=f"{running} partition(s) waiting for their LLM batches", cursor=cursor
        )
    return SensorResult(run_requests=requests, cursor=cursor)


def _describe(statuses: dict[str, str]) -> str:
    return ", ".join(f"{batch_id}: {status}" for batch_id, status in statuses.items())


@sensor(
    name="llm_batches",
    job_name=PIPELINE_JOB,
    minimum_interval_seconds=env_settings.whole_number("ENRICH_LLM_BATCH_POLL_S", 300, 1),
    default_status=default_sensor_status(),
    description=(
        "Polls the LLM batches the enriched layer submitted (ENRICH_LLM_MODE=batch); when a "
        "partition's batches have ended, requests the run that applies their results."
    ),
)
def llm_batches(
    context: SensorEvaluationContext, lake: LakeResource, enricher: LLMResource
) -> SensorResult:
    """Open LLM batches → the runs that apply their results."""
    return llm_batches_tick(
        context,
        lake.lake,
        enricher.settings(),
        max_polls=env_settings.whole_number("ENRICH_LLM_BATCH_MAX_POLLS", 100, 1),
    )
