-- heuristic_lexicon: one row per known word, merging the three seed word lists
-- (registered as sentiment_lexicon(word, score_milli), stopwords(word) and
-- label_keywords(label, keyword)) so that tokens meet the lexicon in a single join.
CREATE TEMP TABLE heuristic_lexicon AS
SELECT
    word,
    max(score_milli) AS score_milli,
    bool_or(is_stopword) AS is_stopword,
    bool_or(is_keyword) AS is_keyword
FROM (
    SELECT word, score_milli, false AS is_stopword, false AS is_keyword FROM sentiment_lexicon
    UNION ALL
    SELECT word, NULL, true, false FROM stopwords
    UNION ALL
    SELECT keyword, NULL, false, true FROM label_keywords
)
GROUP BY word;
