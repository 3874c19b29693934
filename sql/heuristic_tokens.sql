-- heuristic_tokens: the words of every message that some heuristic uses, one row per
-- occurrence: sentiment words, label keywords and topic words.
--
-- A token is a maximal run of Unicode letters, lower-cased; digits, punctuation, emoji and
-- apostrophes split ("don't" -> "don", "t"). A message without letters has no tokens.
-- A topic word has at least $topic_min_chars letters and is no stopword. Everything else
-- (about two thirds of ordinary text) is dropped here, before any aggregation. Words of
-- one or two letters never count (the lexicon loader rejects such entries), so they are
-- never extracted: `\p{L}{3,}` matches exactly the letter runs of three letters or more.
CREATE TEMP TABLE heuristic_tokens AS
SELECT
    t.conv_ord,
    t.msg_idx,
    t.token,
    l.score_milli,
    coalesce(l.is_keyword, false) AS is_keyword,
    length(t.token) >= $topic_min_chars AND l.is_stopword IS NOT true AS is_topic_word
FROM (
    SELECT
        conv_ord,
        msg_idx,
        unnest(regexp_extract_all(lower(content), '\p{L}{3,}')) AS token
    FROM heuristic_messages
) AS t
LEFT JOIN heuristic_lexicon AS l ON l.word = t.token
WHERE l.score_milli IS NOT NULL
   OR l.is_keyword
   OR (length(t.token) >= $topic_min_chars AND l.is_stopword IS NOT true);
