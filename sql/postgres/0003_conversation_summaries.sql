-- Daily per-user summaries (the `conversation_summaries` asset). Unique on
-- (user_id, window_start) (README, "Daily summaries"): re-running a day replaces its
-- rows, never adds. Columns follow sql/conversation_summaries.sql.
CREATE TABLE IF NOT EXISTS conversation_summaries (
    user_id            text        NOT NULL,
    window_start       timestamptz NOT NULL,
    window_end         timestamptz,
    day                date        NOT NULL,
    summary_id         text,
    persona_id         text,
    summary            text,
    key_topics         jsonb,
    emotional_tone     text,
    sentiment          text,
    message_count      integer     NOT NULL,
    conversation_count integer,
    source_chars       bigint,
    compression_ratio  double precision,
    confidence         double precision CHECK (confidence BETWEEN 0 AND 1),
    enricher           text,
    model              text,
    prompt_version     text,
    error              text,
    generated_at       timestamptz,
    published_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, window_start)
);

-- A day's partition is replaced as a whole: find its rows fast.
CREATE INDEX IF NOT EXISTS conversation_summaries_day ON conversation_summaries (day);
