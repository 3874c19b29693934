-- export/enriched/<partition>.jsonl: one normalized, enriched document per
-- completed conversation, keys in the contract's stable order, timestamps as
-- UTC ISO-8601 strings. Rows stream in file order, which is record order (each
-- layer is written in record order): no ORDER BY, so DuckDB never holds the
-- partition in memory. $1 = normalized layer Parquet file, $2 = output path.
COPY (
    SELECT
        conversation_id,
        user_id,
        template_id,
        persona_id,
        emotional_arc_id,
        training_topic_id,
        tier,
        iso_utc(created_at) AS created_at,
        list_transform(messages, lambda m: {
            'role': m.role, 'content': m.content, 'timestamp': iso_utc(m.timestamp)
        }) AS messages,
        metadata,
        stats,
        {
            'summary': enrichment.summary,
            'topics': enrichment.topics,
            'emotional_tone': enrichment.emotional_tone,
            'sentiment': enrichment.sentiment,
            'label': enrichment.label,
            'confidence': enrichment.confidence,
            'quality_score': enrichment.quality_score,
            'enricher': enrichment.enricher,
            'model': enrichment.model,
            'prompt_version': enrichment.prompt_version,
            'error': enrichment.error,
            'prompt_tokens': enrichment.prompt_tokens,
            'completion_tokens': enrichment.completion_tokens
        } AS enrichment,
        status
    FROM read_parquet($1)
    WHERE status = 'completed'
        -- Records that a newer version of their conversation replaced (identity.py).
        AND record_index NOT IN (SELECT record_index FROM excluded_records)
) TO $2 (FORMAT json, USE_TMP_FILE false)
