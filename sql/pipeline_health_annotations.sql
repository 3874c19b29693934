-- pipeline_health_annotations: quality score, confidence distribution and
-- completeness over every partition's normalized file, for the current version of each
-- conversation (a version superseded since is left out: its status file says so).
-- Parameters: $normalized_files (list of lake/normalized/*.parquet), $status_files.
-- Complete = completed with every AI field present and no enrichment error: a
-- conversation that completed with NULL annotations is not complete.
WITH current_records AS (
    SELECT partition, record_index
    FROM read_parquet($status_files, union_by_name = true)
    WHERE status::VARCHAR NOT IN ('duplicate', 'id_conflict', 'superseded')
),
conversations AS (
    SELECT
        status,
        enrichment.quality_score AS quality_score,
        enrichment.confidence AS confidence,
        enrichment.error IS NULL
          AND enrichment.summary IS NOT NULL
          AND enrichment.label IS NOT NULL
          AND enrichment.confidence IS NOT NULL
          AND enrichment.quality_score IS NOT NULL AS annotated
    FROM read_parquet($normalized_files, union_by_name = true)
    SEMI JOIN current_records USING (partition, record_index)
),
buckets AS (
    -- Ten buckets of width 0.1; a confidence of exactly 1.0 falls in the last.
    SELECT least(floor(confidence * 10), 9)::INT AS bucket, count(*) AS n
    FROM conversations
    WHERE confidence IS NOT NULL
    GROUP BY ALL
)
SELECT
    (SELECT count(*) FROM conversations WHERE status = 'completed' AND annotated) AS complete,
    (SELECT avg(quality_score) FROM conversations) AS quality_score_mean,
    (SELECT count(*) FROM conversations WHERE confidence IS NULL) AS confidence_missing,
    (SELECT list({
            'bucket': printf('%.1f-%.1f', b.i / 10, (b.i + 1) / 10),
            'conversations': coalesce(buckets.n, 0)
        } ORDER BY b.i)
       FROM range(10) AS b(i) LEFT JOIN buckets ON buckets.bucket = b.i) AS confidence_histogram;
