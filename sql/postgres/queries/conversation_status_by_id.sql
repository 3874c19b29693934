-- The status row of one conversation id (`enrich status ID`): its current record first
-- (one not set aside as a duplicate, an id conflict or a superseded version), then the
-- latest update.
SELECT partition, record_index, conversation_id, status, retry_count, last_attempt,
       last_error, raw_stored_at, enriched_at, updated_at
FROM conversation_status
WHERE conversation_id = %(conversation_id)s
ORDER BY status IN ('duplicate', 'id_conflict', 'superseded'), updated_at DESC
LIMIT 1
