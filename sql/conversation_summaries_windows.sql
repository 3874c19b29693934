-- The user-windows of one day partition worth a summary: per (user_id, persona_id) and
-- window of $window_hours hours aligned to the day ($day_start, $day_start + window, ...),
-- the window's messages as one pseudo-conversation, when it holds at least $min_messages.
-- Windows are half-open [start, end): 23:59:59 belongs to the day, 00:00:00 to the next.
-- A conversation landed twice (two batches) counts once: identical messages collapse.
WITH day_messages AS (
    SELECT DISTINCT conversation_id, ordinal, user_id, persona_id, role, content, message_at
    FROM summary_messages
    WHERE message_at >= $day_start
        AND message_at < $day_start + INTERVAL 1 DAY
),
windowed AS (
    SELECT
        *,
        time_bucket(to_hours($window_hours::INTEGER), message_at, $day_start) AS window_start
    FROM day_messages
)
SELECT
    user_id,
    persona_id,
    window_start,
    window_start + to_hours($window_hours::INTEGER) AS window_end,
    count(*) AS message_count,
    count(DISTINCT conversation_id) AS conversation_count,
    sum(length(content))::BIGINT AS source_chars,
    min(message_at) AS first_message_at,
    max(message_at) AS last_message_at,
    list(
        {'role': role, 'content': content, 'timestamp': message_at}
        ORDER BY message_at, conversation_id, ordinal
    ) AS messages
FROM windowed
GROUP BY user_id, persona_id, window_start
HAVING count(*) >= $min_messages
ORDER BY user_id, persona_id NULLS FIRST, window_start
