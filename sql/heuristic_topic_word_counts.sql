-- heuristic_topic_word_counts: how often each topic word occurs in each conversation
-- (conv_ord, token, n). A topic word is a token (see heuristic_lexicon_hits.sql) of at
-- least $topic_min_chars letters that is no stopword; about two thirds of ordinary text
-- is not. Counted as the tokens stream by, never stored one row per occurrence.
CREATE TEMP TABLE heuristic_topic_word_counts AS
SELECT
    t.conv_ord,
    t.token,
    count(*) AS n
FROM heuristic_message_tokens AS t
LEFT JOIN heuristic_lexicon AS l ON l.word = t.token
WHERE length(t.token) >= $topic_min_chars AND l.is_stopword IS NOT true
GROUP BY t.conv_ord, t.token;
