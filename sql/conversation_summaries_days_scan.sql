-- The summary_messages of the requested days ($days, 'YYYY-MM-DD'), read from the
-- normalized layer in one scan and written as one Parquet folder per day under $folder
-- (`day=<day>/`): each day's fingerprint (conversation_summaries_inputs.sql) and windows
-- (conversation_summaries_windows.sql) then read that day's folder only.
COPY (
    SELECT
        *,
        strftime(date_trunc('day', message_at), '%Y-%m-%d') AS day
    FROM summary_messages
    WHERE list_contains($days, strftime(date_trunc('day', message_at), '%Y-%m-%d'))
) TO $folder (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (day))
