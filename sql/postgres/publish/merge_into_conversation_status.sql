-- Upsert the staged statuses of one partition; rows that did not change are
-- left alone (no new row version, published_at kept).
INSERT INTO conversation_status AS t (
    partition, record_index, conversation_id, status, retry_count, last_attempt,
    last_error, raw_stored_at, enriched_at, updated_at
)
SELECT
    partition, record_index, conversation_id, status, retry_count, last_attempt,
    last_error, raw_stored_at, enriched_at, updated_at
FROM conversation_status_staging
ON CONFLICT (partition, record_index) DO UPDATE SET
    conversation_id = EXCLUDED.conversation_id,
    status = EXCLUDED.status,
    retry_count = EXCLUDED.retry_count,
    last_attempt = EXCLUDED.last_attempt,
    last_error = EXCLUDED.last_error,
    raw_stored_at = EXCLUDED.raw_stored_at,
    enriched_at = EXCLUDED.enriched_at,
    updated_at = EXCLUDED.updated_at,
    published_at = now()
WHERE (
    t.conversation_id, t.status, t.retry_count, t.last_attempt, t.last_error,
    t.raw_stored_at, t.enriched_at, t.updated_at
) IS DISTINCT FROM (
    EXCLUDED.conversation_id, EXCLUDED.status, EXCLUDED.retry_count, EXCLUDED.last_attempt,
    EXCLUDED.last_error, EXCLUDED.raw_stored_at, EXCLUDED.enriched_at, EXCLUDED.updated_at
)
