-- heuristic_tokens: the words of every message that some heuristic uses, one row per
-- occurrence: sentiment words, label keywords and topic words.
--
-- Input: heuristic_message_tokens(conv_ord, msg_idx, token), every token of every
-- message: a maximal run of Unicode letters of the lower-cased text, three letters or
-- more (TOKEN_PATTERN in enrichment_assets/enrichers/heuristic.py); "don't" gives
-- "don" only. Words of one or two letters never count (the lexicon loader rejects such
-- entries). A topic word has at least $topic_min_chars letters and is no stopword.
-- Everything else (about two thirds of ordinary text) is dropped here, before any
-- aggregation.
CREATE TEMP TABLE heuristic_tokens AS
SELECT
    t.conv_ord,
    t.msg_idx,
    t.token,
    l.score_milli,
    coalesce(l.is_keyword, false) AS is_keyword,
    length(t.token) >= $topic_min_chars AND l.is_stopword IS NOT true AS is_topic_word
FROM heuristic_message_tokens AS t
LEFT JOIN heuristic_lexicon AS l ON l.word = t.token
WHERE l.score_milli IS NOT NULL
   OR l.is_keyword
   OR (length(t.token) >= $topic_min_chars AND l.is_stopword IS NOT true);
