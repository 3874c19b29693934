-- heuristic_lexicon_hits: every occurrence of a sentiment word or a label keyword, one
-- row each (conv_ord, msg_idx, token, score_milli, is_keyword).
--
-- Input: heuristic_message_tokens(conv_ord, msg_idx, token), every token of every
-- message: a maximal run of Unicode letters of the lower-cased text, three letters or
-- more (TOKEN_PATTERN in enrichment_assets/enrichers/heuristic.py); "don't" gives
-- "don" only. Words of one or two letters never count (the lexicon loader rejects such
-- entries), and a stopword is neither a sentiment word nor a keyword here.
CREATE TEMP TABLE heuristic_lexicon_hits AS
SELECT
    t.conv_ord,
    t.msg_idx,
    t.token,
    l.score_milli,
    l.is_keyword
FROM heuristic_message_tokens AS t
JOIN heuristic_lexicon AS l ON l.word = t.token
WHERE l.score_milli IS NOT NULL OR l.is_keyword;
