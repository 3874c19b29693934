-- The conversations of one partition the low-confidence rule looks at: current
-- confidence below $below (NULL is a failure: the failed-partitions sensor's), with
-- their attempts so far and when the last one was made.
--   due:       the last attempt is at least the rule's age old ($due_before)
--   exhausted: no attempt left ($max_attempts in all, the first one included)
-- Inputs (registered frames): current(conversation_id, confidence),
-- attempts(conversation_id, attempted_at); a conversation with no logged attempt
-- counts one, made at $fallback_at (it was enriched before attempts were logged).
WITH logged AS (
    SELECT conversation_id, count(*) AS attempts, max(attempted_at) AS last_attempt_at
    FROM attempts
    GROUP BY conversation_id
)
SELECT
    c.conversation_id,
    c.confidence,
    coalesce(l.attempts, 1) AS attempts,
    coalesce(l.last_attempt_at, $fallback_at) AS last_attempt_at,
    coalesce(l.last_attempt_at, $fallback_at) <= $due_before AS due,
    coalesce(l.attempts, 1) >= $max_attempts AS exhausted
FROM current AS c
LEFT JOIN logged AS l USING (conversation_id)
WHERE c.confidence IS NOT NULL AND c.confidence < $below
ORDER BY c.conversation_id
