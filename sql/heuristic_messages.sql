-- heuristic_messages: one row per conversational message of each input conversation.
--
-- Input:  heuristic_input(conv_ord, conversation_id, messages) -- the caller's frame with a
--         row ordinal, so duplicate or NULL ids still give one output row each.
-- Output: (conv_ord, msg_idx, role, content), msg_idx = 1-based position in the list.
-- System messages are instructions to the model, not conversation: they are left out of
-- every heuristic (summary, topics, sentiment, label, quality).
CREATE TEMP TABLE heuristic_messages AS
SELECT
    conv_ord,
    msg_idx,
    msg.role AS role,
    coalesce(msg.content, '') AS content
FROM (
    SELECT
        conv_ord,
        unnest(messages) AS msg,
        generate_subscripts(messages, 1) AS msg_idx
    FROM heuristic_input
)
WHERE msg.role IS DISTINCT FROM 'system';
