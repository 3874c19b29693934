-- training_dataset_lines: the split and line number of every conversation the dataset keeps.
-- Input: kept (dataset_order, content_hash) of the rows that passed every step, in dataset
-- order; the caller attaches the result to those rows by position (`assign_lines`).
-- A row goes to validation when the first 48 bits of sha256(split seed, content hash), as a
-- fraction of 2^48, fall below the validation fraction: the same content lands in the same
-- split on every run and every machine, whatever else the dataset holds. Lines are numbered
-- from 1 in dataset order within each split.
-- Parameters: $validation_fraction (0 to 1), $split_seed (text).
WITH split AS (
    SELECT
        k.*,
        CASE
            WHEN ('0x' || left(sha256($split_seed || k.content_hash), 12))::UBIGINT
                < $validation_fraction * 281474976710656  -- 2^48
                THEN 'validation'
            ELSE 'train'
        END AS split
    FROM kept AS k
)
SELECT *, row_number() OVER (PARTITION BY split ORDER BY dataset_order) AS line
FROM split
ORDER BY dataset_order
