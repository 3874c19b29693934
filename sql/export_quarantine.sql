-- export/quarantine/<partition>.jsonl: one line per rejected record with where
-- it came from, its raw text and its validation report ({rule, path, value}).
-- $1 = quarantine layer Parquet file, $2 = output path.
COPY (
    SELECT
        conversation_id,
        source_file,
        position,
        raw_text,
        json(validation_errors) AS validation_errors
    FROM read_parquet($1)
    ORDER BY record_index
) TO $2 (FORMAT json)
