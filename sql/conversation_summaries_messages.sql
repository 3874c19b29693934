-- summary_messages: the dated, non-system messages of completed conversations, one row
-- per message, over the view `normalized_conversations` (the normalized layer's Parquet,
-- registered by the caller: every partition for the asset, the new batches for the sensor).
-- A message is dated by its own timestamp, else by its conversation's created_at; a
-- message with neither cannot fall in a window and is left out. System prompts are
-- instructions, not conversation: they are neither counted nor summarized. Conversations
-- without a user_id belong to nobody's window.
CREATE OR REPLACE TEMP VIEW summary_messages AS
-- The messages are unnested in the select list, zipped with their ordinals (1-based), not
-- as a lateral join: DuckDB decorrelates that through a join that first gathers every
-- distinct `messages` list (13 GB for 1,000,000 conversations); this way they stream.
WITH exploded AS (
    SELECT
        c.partition,
        c.conversation_id,
        c.user_id,
        c.persona_id,
        c.created_at,
        unnest(c.messages) AS message,
        unnest(range(1, len(c.messages) + 1)) AS ordinal
    FROM normalized_conversations AS c
    WHERE c.status = 'completed'
        AND c.user_id IS NOT NULL
)
SELECT
    partition,
    conversation_id,
    user_id,
    persona_id,
    ordinal,
    message.role AS role,
    message.content AS content,
    coalesce(message.timestamp, created_at) AS message_at
FROM exploded
WHERE message.role <> 'system'
    AND coalesce(message.timestamp, created_at) IS NOT NULL
