-- Per-conversation status, published from the lake's status Parquet
-- (enrichment_assets/status.py) once per layer of each batch partition.
-- Keyed like the lake: (partition, record_index) is the record's place in the
-- frozen batch, which exists even when the record has no usable id.
CREATE TABLE IF NOT EXISTS conversation_status (
    partition       text        NOT NULL,
    record_index    bigint      NOT NULL,
    conversation_id text,
    status          text        NOT NULL CHECK (status IN (
        'not_started', 'validated', 'enrichment_in_progress', 'enriched',
        'completed', 'validation_failed', 'normalization_failed'
    )),
    retry_count     integer     NOT NULL DEFAULT 0,
    last_attempt    timestamptz,
    last_error      text,
    raw_stored_at   timestamptz,
    enriched_at     timestamptz,
    updated_at      timestamptz NOT NULL,
    published_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partition, record_index)
);

CREATE INDEX IF NOT EXISTS conversation_status_conversation_id
    ON conversation_status (conversation_id);

-- Backlog and failure counts by status.
CREATE INDEX IF NOT EXISTS conversation_status_status ON conversation_status (status);
