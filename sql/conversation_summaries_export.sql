-- export/summaries/<day>.jsonl: one line per user-window summary of the day.
-- $1 = the day's summaries Parquet file, $2 = output path.
COPY (
    SELECT
        summary_id,
        strftime(day, '%Y-%m-%d') AS day,
        user_id,
        persona_id,
        persona_ids,
        iso_utc(window_start) AS window_start,
        iso_utc(window_end) AS window_end,
        message_count,
        conversation_count,
        summary,
        topics,
        emotional_tone,
        sentiment,
        confidence,
        compression_ratio,
        enricher,
        model,
        prompt_version,
        error,
        iso_utc(generated_at) AS generated_at
    FROM read_parquet($1)
    ORDER BY user_id, window_start
) TO $2 (FORMAT json)
