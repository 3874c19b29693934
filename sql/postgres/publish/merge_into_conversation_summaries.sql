-- Upsert one day's staged summaries on (user_id, window_start): a re-run of
-- the day replaces its rows, never duplicates them.
INSERT INTO conversation_summaries AS t (
    user_id, window_start, window_end, day, summary_id, persona_id, summary, key_topics,
    emotional_tone, sentiment, message_count, conversation_count, source_chars,
    compression_ratio, confidence, enricher, model, prompt_version, error, generated_at
)
SELECT
    user_id, window_start, window_end, day, summary_id, persona_id, summary, key_topics,
    emotional_tone, sentiment, message_count, conversation_count, source_chars,
    compression_ratio, confidence, enricher, model, prompt_version, error, generated_at
FROM conversation_summaries_staging
ON CONFLICT (user_id, window_start) DO UPDATE SET
    window_end = EXCLUDED.window_end,
    day = EXCLUDED.day,
    summary_id = EXCLUDED.summary_id,
    persona_id = EXCLUDED.persona_id,
    summary = EXCLUDED.summary,
    key_topics = EXCLUDED.key_topics,
    emotional_tone = EXCLUDED.emotional_tone,
    sentiment = EXCLUDED.sentiment,
    message_count = EXCLUDED.message_count,
    conversation_count = EXCLUDED.conversation_count,
    source_chars = EXCLUDED.source_chars,
    compression_ratio = EXCLUDED.compression_ratio,
    confidence = EXCLUDED.confidence,
    enricher = EXCLUDED.enricher,
    model = EXCLUDED.model,
    prompt_version = EXCLUDED.prompt_version,
    error = EXCLUDED.error,
    generated_at = EXCLUDED.generated_at,
    published_at = now()
