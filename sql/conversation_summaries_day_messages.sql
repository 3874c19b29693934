-- One day's summary_messages ($day_start: its 00:00 UTC), read from the lake once: the
-- day's inputs fingerprint (conversation_summaries_inputs.sql) and its windows
-- (conversation_summaries_windows.sql) then read this table, through
-- conversation_summaries_day_view.sql.
CREATE OR REPLACE TEMP TABLE day_summary_messages AS
SELECT *
FROM summary_messages
WHERE message_at >= $day_start
    AND message_at < $day_start + INTERVAL 1 DAY
