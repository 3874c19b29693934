-- status_register_records: every raw record of a batch starts (or restarts) as
-- `not_started`; its retry count survives a re-ingest and counts attempts.
-- $records: the raw layer's (record_index, conversation_id) rows, in record order;
-- $previous: the batch's status rows so far (none on a first ingest).
-- One range of record indexes at a time ($range_start inclusive, $range_end exclusive).
SELECT
    $partition AS partition,
    r.record_index,
    r.conversation_id,
    'not_started' AS status,
    coalesce(p.retry_count + 1, 0) AS retry_count,
    CAST(NULL AS TIMESTAMPTZ) AS last_attempt,
    CAST(NULL AS VARCHAR) AS last_error,
    CAST($stored_at AS TIMESTAMPTZ) AS raw_stored_at,
    CAST(NULL AS TIMESTAMPTZ) AS enriched_at,
    CAST($stored_at AS TIMESTAMPTZ) AS updated_at
FROM records AS r
LEFT JOIN (
    SELECT * FROM previous
    WHERE record_index >= $range_start AND record_index < $range_end
) AS p USING (record_index)
WHERE r.record_index >= $range_start AND r.record_index < $range_end
ORDER BY r.record_index
