-- conversation_summaries: one row per (user_id, window_start) of the day, from
-- the registered `summary_windows` (conversation_summaries_windows.sql plus each window's
-- deterministic `summary_id`) and `summary_annotations` (the enricher's rows, keyed by
-- that id). A failed annotation keeps its window with NULL AI fields and `error`.
-- compression_ratio = summary characters / source characters of the window's messages.
SELECT
    w.summary_id,
    $day::DATE AS day,
    w.user_id,
    w.persona_id,
    w.persona_ids,
    w.window_start,
    w.window_end,
    w.message_count,
    w.conversation_count,
    w.source_chars,
    w.first_message_at,
    w.last_message_at,
    a.summary,
    a.topics,
    a.emotional_tone,
    a.sentiment,
    a.confidence,
    CASE
        WHEN a.summary IS NOT NULL AND w.source_chars > 0
            THEN round(length(a.summary)::DOUBLE / w.source_chars, 4)
    END AS compression_ratio,
    a.enricher,
    a.model,
    a.prompt_version,
    a.error,
    $min_messages::INTEGER AS min_messages,
    $window_hours::INTEGER AS window_hours,
    $generated_at::TIMESTAMPTZ AS generated_at
FROM summary_windows AS w
LEFT JOIN summary_annotations AS a ON a.conversation_id = w.summary_id
ORDER BY w.user_id, w.window_start
