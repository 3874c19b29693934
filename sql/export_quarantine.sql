-- export/quarantine/<partition>.jsonl: one line per rejected record with where
-- it came from, its raw text and its validation report ({rule, path, value}).
-- Rows stream in file order, which is record order (each layer is written in
-- record order): no ORDER BY, so DuckDB never holds the partition in memory.
-- $1 = quarantine layer Parquet file, $2 = output path.
COPY (
    SELECT
        conversation_id,
        source_file,
        position,
        raw_text,
        json(validation_errors) AS validation_errors,
        -- A duplicate, id conflict or superseded version: the record that was kept instead.
        CASE WHEN kept_partition IS NOT NULL THEN {
            'partition': kept_partition,
            'record_index': kept_record_index,
            'source_file': kept_source_file,
            'position': kept_position
        } END AS kept
    FROM read_parquet($1)
) TO $2 (FORMAT json, USE_TMP_FILE false)
