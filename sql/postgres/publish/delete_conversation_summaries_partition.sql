-- Summaries of the day that the staged rows no longer hold.
DELETE FROM conversation_summaries AS t
WHERE t.day = %(partition)s
  AND NOT EXISTS (
      SELECT 1
      FROM conversation_summaries_staging AS s
      WHERE s.user_id = t.user_id AND s.window_start = t.window_start
  )
