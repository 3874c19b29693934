-- Identity (enrichment_assets/identity.py): the statuses of records set aside as
-- duplicates, id conflicts or superseded versions, and the identity index itself.
ALTER TABLE conversation_status DROP CONSTRAINT IF EXISTS conversation_status_status_check;
ALTER TABLE conversation_status ADD CONSTRAINT conversation_status_status_check
    CHECK (status IN (
        'not_started', 'validated', 'enrichment_in_progress', 'enriched',
        'completed', 'validation_failed', 'normalization_failed',
        'duplicate', 'id_conflict', 'superseded'
    ));

-- One row per first occurrence of a conversation id in a batch partition: the identity
-- index shared by every worker (the embedded default keeps it as lake/identity/*.parquet).
CREATE TABLE IF NOT EXISTS conversation_versions (
    partition       text        NOT NULL,
    record_index    bigint      NOT NULL,
    conversation_id text        NOT NULL,
    record_hash     text        NOT NULL,
    landed_at       timestamptz NOT NULL,
    source_file     text,
    position        bigint,
    PRIMARY KEY (partition, record_index)
);

CREATE INDEX IF NOT EXISTS conversation_versions_conversation_id
    ON conversation_versions (conversation_id);
