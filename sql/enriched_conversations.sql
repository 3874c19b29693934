-- enriched_conversations: what the enriched layer adds to a chunk of validated
-- conversations: reference metadata, per-conversation stats and AI annotations,
-- one row per record_index, in record order. The caller joins these columns onto
-- the chunk's own (messages and all), so the wide message lists never go through
-- this query's joins and sort.
-- Inputs (registered by the asset): conversations (validated layer rows),
-- annotations (one row per conversation_id, the Enricher contract),
-- personas, emotional_arcs, training_topics, templates (reference data).
-- A reference id the reference data does not know leaves its part of
-- `metadata` NULL (counted by a WARN check), it never rejects the row.
SELECT
    c.record_index,
    {
        'persona': CASE WHEN p.persona_id IS NOT NULL THEN {
            'persona_id': p.persona_id, 'name': p.name,
            'description': p.description, 'communication_style': p.communication_style
        } END,
        'emotional_arc': CASE WHEN ea.emotional_arc_id IS NOT NULL THEN {
            'emotional_arc_id': ea.emotional_arc_id, 'name': ea.name,
            'description': ea.description, 'start_emotion': ea.start_emotion,
            'end_emotion': ea.end_emotion
        } END,
        'training_topic': CASE WHEN tt.training_topic_id IS NOT NULL THEN {
            'training_topic_id': tt.training_topic_id, 'name': tt.name,
            'domain': tt.domain, 'difficulty': tt.difficulty
        } END,
        'template': CASE WHEN t.template_id IS NOT NULL THEN {
            'template_id': t.template_id, 'name': t.name,
            'tier': t.tier, 'description': t.description
        } END
    } AS metadata,
    -- Ids given but unknown to the reference data (for the WARN check).
    (c.persona_id IS NOT NULL AND p.persona_id IS NULL)::INT
      + (c.emotional_arc_id IS NOT NULL AND ea.emotional_arc_id IS NULL)::INT
      + (c.training_topic_id IS NOT NULL AND tt.training_topic_id IS NULL)::INT
      + (c.template_id IS NOT NULL AND t.template_id IS NULL)::INT AS unknown_reference_ids,
    {
        'message_count': len(c.messages),
        'user_messages': len(list_filter(c.messages, lambda m: m.role = 'user')),
        'assistant_messages': len(list_filter(c.messages, lambda m: m.role = 'assistant')),
        'system_messages': len(list_filter(c.messages, lambda m: m.role = 'system')),
        'characters': list_sum(list_transform(c.messages, lambda m: length(m.content)))::BIGINT,
        -- ~4 characters per token for English text: an estimate, not a tokenizer.
        'token_estimate': ceil(
            list_sum(list_transform(c.messages, lambda m: length(m.content))) / 4.0
        )::BIGINT,
        'duration_seconds': date_diff(
            'second',
            list_min(list_transform(c.messages, lambda m: m.timestamp)),
            list_max(list_transform(c.messages, lambda m: m.timestamp))
        )
    } AS stats,
    {
        'summary': a.summary,
        'topics': a.topics,
        'emotional_tone': a.emotional_tone,
        'sentiment': a.sentiment,
        'label': a.label,
        'confidence': a.confidence,
        'quality_score': a.quality_score,
        'enricher': a.enricher,
        'model': a.model,
        'prompt_version': a.prompt_version,
        'error': a.error,
        'prompt_tokens': a.prompt_tokens,
        'completion_tokens': a.completion_tokens,
        'cached': a.cached
    } AS enrichment
FROM conversations AS c
LEFT JOIN annotations AS a USING (conversation_id)
LEFT JOIN personas AS p ON p.persona_id = c.persona_id
LEFT JOIN emotional_arcs AS ea ON ea.emotional_arc_id = c.emotional_arc_id
LEFT JOIN training_topics AS tt ON tt.training_topic_id = c.training_topic_id
LEFT JOIN templates AS t ON t.template_id = c.template_id
ORDER BY c.record_index
