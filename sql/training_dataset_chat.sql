-- export/dataset/<name>/{train,validation}.jsonl: one {"messages": [{"role", "content"}]}
-- line per conversation of the split (OpenAI fine-tuning chat format), in line order: the
-- staged file is written in dataset order, and rows stream in file order (no ORDER BY, so
-- DuckDB never holds the dataset in memory).
-- $1 = staged dataset Parquet file, $2 = output path, $3 = split.
COPY (
    SELECT list_transform(messages, lambda m: {'role': m.role, 'content': m.content}) AS messages
    FROM read_parquet($1)
    WHERE split = $3
) TO $2 (FORMAT json)
