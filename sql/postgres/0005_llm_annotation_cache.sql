-- The LLM annotation cache shared by every worker (enrichment_assets/app_db/llm_cache.py):
-- successful annotations by the content hash of what produced them. The embedded default
-- keeps the same rows in a SQLite file per machine (enrichers/cache.py).
CREATE TABLE IF NOT EXISTS llm_annotation_cache (
    key               text        PRIMARY KEY,
    model             text        NOT NULL,
    prompt_version    text        NOT NULL,
    annotation        text        NOT NULL,  -- the validated annotation, as JSON (bytes kept)
    prompt_tokens     integer,               -- what the original request spent
    completion_tokens integer,
    created_at        timestamptz NOT NULL DEFAULT now()
);
