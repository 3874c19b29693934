-- Rows of the partition that the staged statuses no longer hold (a batch
-- re-ingested with fewer records).
DELETE FROM conversation_status AS t
WHERE t.partition = %(partition)s
  AND NOT EXISTS (
      SELECT 1
      FROM conversation_status_staging AS s
      WHERE s.partition = t.partition AND s.record_index = t.record_index
  )
