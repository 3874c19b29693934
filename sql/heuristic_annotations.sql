-- heuristic_annotations: one annotation row per input conversation (conv_ord), from
-- heuristic_input, heuristic_messages, heuristic_topic_word_counts,
-- heuristic_lexicon_hits, label_keywords(label, keyword) and labels(label, label_rank).
--
-- Determinism: sums are over integers (sentiment scores in thousandths) and the only
-- floating-point steps are divisions of exact totals, so the order of parallel
-- aggregation can not change a result; every ranking has an explicit tie-break.
WITH
topic_word_counts AS (
    SELECT conv_ord, token, n FROM heuristic_topic_word_counts
),

-- lexical variety: distinct topic words / topic words (stopwords repeat by nature).
vocabulary AS (
    SELECT conv_ord, count(*) AS distinct_words, sum(n) AS total_words
    FROM topic_word_counts
    GROUP BY conv_ord
),

-- topics: the $topic_count most frequent topic words, ties alphabetical. The tie-break
-- is folded into one integer key (count, then alphabetical rank among this input's
-- words) so that a top-N aggregate, not a sort per conversation, picks them.
alphabetical AS (
    SELECT token, row_number() OVER (ORDER BY token) AS alpha_rank
    FROM (SELECT DISTINCT token FROM topic_word_counts)
),

topics AS (
    SELECT conv_ord, max_by(token, (n::BIGINT << 32) - alpha_rank, $topic_count) AS topics
    FROM topic_word_counts
    JOIN alphabetical USING (token)
    GROUP BY conv_ord
),

-- sentiment: the mean lexicon score of the matched tokens; per message too, for the spread.
message_sentiment AS (
    SELECT conv_ord, msg_idx, sum(score_milli) AS score_milli, count(*) AS matched
    FROM heuristic_lexicon_hits
    WHERE score_milli IS NOT NULL
    GROUP BY conv_ord, msg_idx
),

conversation_sentiment AS (
    SELECT
        conv_ord,
        sum(score_milli) / sum(matched) / 1000.0 AS sentiment,
        (max(score_milli / matched) - min(score_milli / matched)) / 1000.0 AS spread
    FROM message_sentiment
    GROUP BY conv_ord
),

-- label: the label with the most keyword hits; ties go to the earlier label in LABELS.
label_hits AS (
    SELECT t.conv_ord, k.label, l.label_rank, count(*) AS hits
    FROM heuristic_lexicon_hits AS t
    JOIN label_keywords AS k ON k.keyword = t.token
    JOIN labels AS l ON l.label = k.label
    WHERE t.is_keyword
    GROUP BY t.conv_ord, k.label, l.label_rank
),

label_winner AS (
    SELECT
        conv_ord,
        arg_max(label, hits * 64 - label_rank) AS label,
        max(hits) AS winner_hits,
        sum(hits) AS total_hits
    FROM label_hits
    GROUP BY conv_ord
),

-- structure of the conversation, for quality_score and summary.
turns AS (
    SELECT
        conv_ord,
        msg_idx,
        role,
        content,
        role IS DISTINCT FROM lag(role) OVER (PARTITION BY conv_ord ORDER BY msg_idx)
            AS role_changed
    FROM heuristic_messages
),

structure AS (
    SELECT
        conv_ord,
        count(*) AS n_turns,
        count(*) FILTER (WHERE role = 'user') AS n_user,
        count(*) FILTER (WHERE role = 'assistant') AS n_assistant,
        -- the first turn always "changes"; count only changes between neighbours
        greatest(0, count(*) FILTER (WHERE role_changed) - 1) AS role_changes,
        sum(length(content)) FILTER (WHERE role = 'assistant') AS assistant_chars,
        -- short: under $short_reply_chars characters, or nothing but whitespace
        count(*) FILTER (
            WHERE role = 'assistant'
              AND (length(content) < $short_reply_chars OR NOT regexp_matches(content, '\S'))
        ) AS short_replies,
        arg_min(content, msg_idx) FILTER (WHERE role = 'user') AS first_user,
        arg_max(content, msg_idx) FILTER (WHERE role = 'assistant') AS last_assistant
    FROM turns
    GROUP BY conv_ord
),

-- summary: first sentence of the first user message + first sentence of the last
-- assistant message (first_sentence() is in heuristic_first_sentence.sql).
summary_parts AS (
    SELECT
        conv_ord,
        concat_ws(' ', first_sentence(first_user), first_sentence(last_assistant)) AS summary
    FROM structure
)

SELECT
    i.conv_ord,
    i.conversation_id,

    CASE
        WHEN length(coalesce(p.summary, '')) <= $summary_max_chars THEN coalesce(p.summary, '')
        ELSE rtrim(left(p.summary, $summary_max_chars - 1)) || '…'
    END AS summary,

    coalesce(t.topics, []::VARCHAR[]) AS topics,

    -- tone: "mixed" when messages pull both ways (per-message spread >= $mixed_spread)
    -- and the mean stays near zero; otherwise the sign of the mean past $tone_threshold.
    CASE
        WHEN s.spread >= $mixed_spread AND abs(s.sentiment) < $tone_threshold THEN 'mixed'
        WHEN s.sentiment >= $tone_threshold THEN 'positive'
        WHEN s.sentiment <= -$tone_threshold THEN 'negative'
        ELSE 'neutral'
    END AS emotional_tone,

    -- 0.0 when no token matched the lexicon: the heuristic did run and found no
    -- sentiment-bearing word, which is "neutral", not a failed annotation.
    greatest(-1.0, least(1.0, coalesce(s.sentiment, 0.0))) AS sentiment,

    -- No keyword at all: "other". Confidence is the winner's share of hits with add-one
    -- smoothing over the $label_count labels, (winner + 1) / (total + $label_count):
    -- modest for few hits, towards 1 for many unanimous ones; 1/$label_count with no hits.
    coalesce(w.label, 'other') AS label,
    (coalesce(w.winner_hits, 0) + 1.0) / (coalesce(w.total_hits, 0) + $label_count)
        AS confidence,

    -- quality_score, 0..100, from structure only (weights sum to 100):
    --   20 * both a user and an assistant turn present
    --   20 * alternation: role changes between neighbouring turns / (turns - 1)
    --   25 * min(1, mean assistant reply chars / $target_reply_chars)
    --   15 * (1 - assistant replies shorter than $short_reply_chars / assistant replies)
    --   20 * min(1, distinct topic words / topic words / $target_distinct_ratio)  (variety)
    round(
        20.0 * (coalesce(st.n_user, 0) > 0 AND coalesce(st.n_assistant, 0) > 0)::INTEGER
        + 20.0 * CASE WHEN st.n_turns > 1 THEN st.role_changes / (st.n_turns - 1) ELSE 0 END
        + 25.0 * CASE WHEN st.n_assistant > 0
            THEN least(1.0, st.assistant_chars / st.n_assistant / $target_reply_chars)
            ELSE 0 END
        + 15.0 * CASE WHEN st.n_assistant > 0
            THEN 1.0 - st.short_replies / st.n_assistant
            ELSE 0 END
        + 20.0 * CASE WHEN v.total_words > 0
            THEN least(1.0, v.distinct_words / v.total_words / $target_distinct_ratio)
            ELSE 0 END,
        2
    ) AS quality_score

FROM heuristic_input AS i
LEFT JOIN summary_parts AS p USING (conv_ord)
LEFT JOIN topics AS t USING (conv_ord)
LEFT JOIN conversation_sentiment AS s USING (conv_ord)
LEFT JOIN label_winner AS w USING (conv_ord)
LEFT JOIN structure AS st USING (conv_ord)
LEFT JOIN vocabulary AS v USING (conv_ord)
ORDER BY i.conv_ord;
