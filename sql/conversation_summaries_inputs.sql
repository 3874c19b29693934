-- The inputs of each requested summary day ($days, 'YYYY-MM-DD'), over summary_messages
-- (see conversation_summaries_messages.sql): its message count and an order-free hash of
-- its rows. A day's summaries depend on nothing else of the lake (windows tile the day),
-- so the same count and hash mean the same summaries: the day is not computed again.
SELECT
    strftime(date_trunc('day', message_at), '%Y-%m-%d') AS day,
    count(*) AS messages,
    sum(hash(conversation_id, user_id, persona_id, ordinal, role, content, message_at))::VARCHAR
        AS rows_hash
FROM summary_messages
WHERE list_contains($days, strftime(date_trunc('day', message_at), '%Y-%m-%d'))
GROUP BY ALL
ORDER BY day
