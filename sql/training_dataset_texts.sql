-- training_dataset_texts: what the near-duplicate step compares, per conversation of one
-- normalized layer file: the contents of its messages, case-folded, joined by spaces.
-- Rows stream in file order, which is record order (no ORDER BY).
-- $1 = normalized layer Parquet file.
SELECT
    record_index,
    lower(array_to_string(list_transform(messages, lambda m: m.content), ' ')) AS text
FROM read_parquet($1)
