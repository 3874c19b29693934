-- export/dataset/<name>/provenance.jsonl: where each dataset line comes from, aligned line
-- by line with train.jsonl followed by validation.jsonl (`split` and `line` say which).
-- source_sha256 names the landed file (lake/landing_store/<partition>/files/...) and
-- position the record in it (line of JSON Lines, element of an array, 1 for one object);
-- record_sha256 is the sha256 of that record's text, content_hash the dataset's
-- normalized content hash (what exact duplicates share).
-- $1 = staged dataset Parquet file, $2 = output path.
COPY (
    SELECT
        split,
        line,
        conversation_id,
        partition,
        record_index,
        source_file,
        source_sha256,
        landing_file,
        position,
        record_sha256,
        run_id,
        enricher,
        model,
        prompt_version,
        content_hash
    FROM read_parquet($1)
    ORDER BY split = 'validation', line
) TO $2 (FORMAT json)
