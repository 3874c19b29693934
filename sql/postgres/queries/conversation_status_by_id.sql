-- The latest status row of one conversation id (`enrich status ID`).
SELECT partition, record_index, conversation_id, status, retry_count, last_attempt,
       last_error, raw_stored_at, enriched_at, updated_at
FROM conversation_status
WHERE conversation_id = %(conversation_id)s
ORDER BY updated_at DESC
LIMIT 1
