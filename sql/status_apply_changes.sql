-- status_apply_changes: the batch's status rows ($status_path) with `changes` applied.
-- `changes` holds record_index and every changeable column; $set_<column> says
-- whether the change sets that column (one it leaves out keeps its value, even NULL).
-- A row re-entering `enrichment_in_progress` from anything but `validated` is one
-- more attempt, unless the change sets the retry count itself.
-- One range of record indexes at a time ($range_start inclusive, $range_end exclusive):
-- what DuckDB holds to join and sort is one range's rows, not the batch's.
SELECT
    s.partition,
    s.record_index,
    s.conversation_id,
    CASE WHEN c.status IS NOT NULL THEN c.status ELSE s.status END AS status,
    CASE
        WHEN c.status IS NOT NULL AND $set_retry_count THEN c.retry_count
        WHEN NOT $set_retry_count
            AND c.status = 'enrichment_in_progress'
            AND s.status <> 'validated'
            THEN s.retry_count + 1
        ELSE s.retry_count
    END AS retry_count,
    CASE WHEN c.status IS NOT NULL AND $set_last_attempt THEN c.last_attempt
        ELSE s.last_attempt END AS last_attempt,
    CASE WHEN c.status IS NOT NULL AND $set_last_error THEN c.last_error
        ELSE s.last_error END AS last_error,
    s.raw_stored_at,
    CASE WHEN c.status IS NOT NULL AND $set_enriched_at THEN c.enriched_at
        ELSE s.enriched_at END AS enriched_at,
    CASE WHEN c.status IS NOT NULL THEN CAST($now AS TIMESTAMPTZ) ELSE s.updated_at END
        AS updated_at
FROM read_parquet($status_path) AS s
LEFT JOIN (
    SELECT * FROM changes
    WHERE record_index >= $range_start AND record_index < $range_end
) AS c USING (record_index)
WHERE s.record_index >= $range_start AND s.record_index < $range_end
ORDER BY s.record_index
