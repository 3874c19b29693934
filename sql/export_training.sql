-- export/training/<partition>.jsonl: the OpenAI fine-tuning chat format, one
-- {"messages": [{"role", "content"}]} line per completed conversation.
-- $1 = normalized layer Parquet file, $2 = output path.
COPY (
    SELECT list_transform(messages, lambda m: {'role': m.role, 'content': m.content}) AS messages
    FROM read_parquet($1)
    WHERE status = 'completed'
    ORDER BY record_index
) TO $2 (FORMAT json)
