-- pipeline_health: one row of health metrics over every partition's status file.
-- Parameters: $status_files (list of lake/status/*.parquet).
-- Pending = a conversation on its way (not yet completed nor failed): the backlog.
-- Records set aside by the identity index (duplicate, id_conflict, superseded) are neither
-- pending nor failed, and not counted as validated conversations.
WITH statuses AS (
    SELECT * FROM read_parquet($status_files, union_by_name = true)
),
processed AS (
    SELECT
        enriched_at,
        epoch(enriched_at - raw_stored_at) AS seconds_to_enriched
    FROM statuses
    WHERE enriched_at IS NOT NULL
),
hourly AS (
    SELECT date_trunc('hour', enriched_at) AS hour, count(*) AS conversations
    FROM processed
    GROUP BY ALL
)
SELECT
    (SELECT count(*) FROM statuses) AS conversations,
    (SELECT count(DISTINCT partition) FROM statuses) AS partitions,
    (SELECT map_from_entries(list({'k': status::VARCHAR, 'v': n}))
       FROM (SELECT status, count(*) AS n FROM statuses GROUP BY ALL)) AS per_status,
    (SELECT count(*) FROM statuses
      WHERE status IN ('not_started', 'validated', 'enrichment_in_progress', 'enriched'))
      AS backlog,
    (SELECT count(*) FROM statuses
      WHERE status IN ('validation_failed', 'normalization_failed')) AS failed,
    (SELECT count(*) FROM statuses
      WHERE status IN ('duplicate', 'id_conflict', 'superseded')) AS set_aside,
    -- Records on their way (not yet in a final status), per partition: stranded unless a
    -- run is working on them (checks/health.py asks the Dagster instance).
    (SELECT coalesce(map_from_entries(list({'k': partition, 'v': n})), MAP {})
       FROM (SELECT partition, count(*) AS n FROM statuses
             WHERE status IN ('not_started', 'validated', 'enrichment_in_progress', 'enriched')
             GROUP BY ALL)) AS unfinished_per_partition,
    -- What each partition's exports must hold (see exports.verify_exports).
    (SELECT coalesce(map_from_entries(list({'k': partition, 'v': n})), MAP {})
       FROM (SELECT partition, count(*) FILTER (status = 'completed') AS n
             FROM statuses GROUP BY ALL)) AS completed_per_partition,
    (SELECT count(*) FROM statuses
      WHERE status NOT IN ('validation_failed', 'duplicate', 'id_conflict', 'superseded'))
      AS validated,
    (SELECT quantile_cont(seconds_to_enriched, 0.5) FROM processed) AS seconds_to_enriched_p50,
    (SELECT quantile_cont(seconds_to_enriched, 0.95) FROM processed) AS seconds_to_enriched_p95,
    -- Throughput while the pipeline was working: enriched per hour of activity
    -- (the span from first to last enrichment, at least one minute).
    (SELECT count(*) / greatest(epoch(max(enriched_at) - min(enriched_at)), 60) * 3600
       FROM processed) AS records_per_hour,
    (SELECT coalesce(list({'hour': hour, 'conversations': conversations} ORDER BY hour), [])
       FROM hourly) AS hourly,
    (SELECT coalesce(list(DISTINCT partition ORDER BY partition), [])
       FROM statuses WHERE last_error LIKE 'gate %') AS gate_blocked_partitions;
