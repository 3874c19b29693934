-- Summaries across every day partition, for `enrich report`: one row per day.
-- $1 = glob of the summaries Parquet files.
SELECT
    strftime(day, '%Y-%m-%d') AS day,
    count(*) AS summaries,
    count(DISTINCT user_id) AS users,
    count(*) FILTER (WHERE error IS NOT NULL) AS failed,
    avg(confidence) AS mean_confidence,
    avg(compression_ratio) AS mean_compression_ratio,
    max(generated_at) AS generated_at
FROM read_parquet($1, union_by_name = true)
GROUP BY day
ORDER BY day
