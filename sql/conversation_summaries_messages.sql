-- summary_messages: the dated, non-system messages of completed conversations, one row
-- per message, over the view `normalized_conversations` (the normalized layer's Parquet,
-- registered by the caller: every partition for the asset, the new batches for the sensor).
-- A message is dated by its own timestamp, else by its conversation's created_at; a
-- message with neither cannot fall in a window and is left out. System prompts are
-- instructions, not conversation: they are neither counted nor summarized. Conversations
-- without a user_id belong to nobody's window.
CREATE OR REPLACE TEMP VIEW summary_messages AS
SELECT
    c.partition,
    c.conversation_id,
    c.user_id,
    c.persona_id,
    m.ordinal,
    m.message.role AS role,
    m.message.content AS content,
    coalesce(m.message.timestamp, c.created_at) AS message_at
FROM normalized_conversations AS c,
    unnest(c.messages) WITH ORDINALITY AS m(message, ordinal)
WHERE c.status = 'completed'
    AND c.user_id IS NOT NULL
    AND m.message.role <> 'system'
    AND coalesce(m.message.timestamp, c.created_at) IS NOT NULL
