-- What happens to each valid record of a batch, by its conversation id and content.
-- Inputs: `batch_rows` (record_index, conversation_id, record_hash, source_file, position)
-- of partition $partition; the views of identity_versions.sql over `identity_rows`, which
-- hold the batch's first occurrences and the other partitions' rows for the same ids.
-- Output: one row per record of `batch_rows` that is set aside (kept records have none):
--   duplicate    an exact repeat: in this batch, or of a version landed earlier;
--   id_conflict  another conversation under an id used earlier in this batch;
--   superseded   an older version: a newer one of the id has landed;
-- with the record that was kept instead (partition, record_index, source_file, position).
WITH numbered AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY conversation_id ORDER BY record_index) AS nth
    FROM batch_rows
),
firsts AS (
    SELECT * FROM numbered WHERE nth = 1
),
repeats AS (
    SELECT
        r.record_index,
        CASE WHEN r.record_hash = f.record_hash THEN 'duplicate' ELSE 'id_conflict' END
            AS outcome,
        $partition AS kept_partition,
        f.record_index AS kept_record_index,
        f.source_file AS kept_source_file,
        f.position AS kept_position
    FROM numbered AS r
    JOIN firsts AS f USING (conversation_id)
    WHERE r.nth > 1
),
across AS (
    SELECT
        f.record_index,
        CASE
            WHEN o.partition <> $partition OR o.record_index <> f.record_index THEN 'duplicate'
            WHEN c.record_hash <> f.record_hash THEN 'superseded'
        END AS outcome,
        CASE WHEN o.partition <> $partition OR o.record_index <> f.record_index
            THEN o.partition ELSE c.partition END AS kept_partition,
        CASE WHEN o.partition <> $partition OR o.record_index <> f.record_index
            THEN o.record_index ELSE c.record_index END AS kept_record_index,
        CASE WHEN o.partition <> $partition OR o.record_index <> f.record_index
            THEN o.source_file ELSE c.source_file END AS kept_source_file,
        CASE WHEN o.partition <> $partition OR o.record_index <> f.record_index
            THEN o.position ELSE c.position END AS kept_position
    FROM firsts AS f
    JOIN identity_first_occurrence AS o USING (conversation_id, record_hash)
    JOIN identity_current AS c USING (conversation_id)
)
SELECT * FROM repeats
UNION ALL
SELECT * FROM across WHERE outcome IS NOT NULL
ORDER BY record_index
