-- The days (UTC) on which each batch partition of `normalized_conversations` holds
-- summarizable messages (see conversation_summaries_messages.sql): what a newly
-- materialized batch can make stale.
SELECT
    partition,
    strftime(date_trunc('day', message_at), '%Y-%m-%d') AS day,
    count(*) AS messages
FROM summary_messages
GROUP BY ALL
ORDER BY day, partition
