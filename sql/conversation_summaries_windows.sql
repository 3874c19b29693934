-- The user-windows of one day partition worth a summary: per user_id and window of
-- $window_hours hours aligned to the day ($day_start, $day_start + window, ...), the
-- window's messages across all the user's personas as one pseudo-conversation, when it
-- holds at least $min_messages. Unique on (user_id, window_start), the contract's key.
-- persona_id is the user's most frequent persona in the window (by messages; ties go to
-- the first persona_id in order; NULL when no message has one), persona_ids every
-- distinct persona of the window, sorted.
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
),
windows AS (
    SELECT
        user_id,
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
    GROUP BY user_id, window_start
    HAVING count(*) >= $min_messages
),
persona_messages AS (
    SELECT user_id, window_start, persona_id, count(*) AS messages
    FROM windowed
    WHERE persona_id IS NOT NULL
    GROUP BY user_id, window_start, persona_id
),
window_personas AS (
    SELECT
        user_id,
        window_start,
        first(persona_id ORDER BY messages DESC, persona_id) AS persona_id,
        list(persona_id ORDER BY persona_id) AS persona_ids
    FROM persona_messages
    GROUP BY user_id, window_start
)
SELECT
    w.user_id,
    p.persona_id,
    coalesce(p.persona_ids, []::VARCHAR[]) AS persona_ids,
    w.window_start,
    w.window_end,
    w.message_count,
    w.conversation_count,
    w.source_chars,
    w.first_message_at,
    w.last_message_at,
    w.messages
FROM windows AS w
LEFT JOIN window_personas AS p USING (user_id, window_start)
ORDER BY w.user_id, w.window_start
