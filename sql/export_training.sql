-- export/training/<partition>.jsonl: the OpenAI fine-tuning chat format, one
-- {"messages": [{"role", "content"}]} line per completed conversation.
-- Rows stream in file order, which is record order (each layer is written in
-- record order): no ORDER BY, so DuckDB never holds the partition in memory.
-- $1 = normalized layer Parquet file, $2 = output path; `excluded_records` (record_index)
-- is registered by the caller.
COPY (
    SELECT list_transform(messages, lambda m: {'role': m.role, 'content': m.content}) AS messages
    FROM read_parquet($1)
    WHERE status = 'completed'
        -- Records that a newer version of their conversation replaced (identity.py).
        AND record_index NOT IN (SELECT record_index FROM excluded_records)
) TO $2 (FORMAT json, USE_TMP_FILE false)
