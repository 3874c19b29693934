-- training_dataset_candidates: the current version of every completed conversation of the
-- selected partitions, one row each (no messages), in dataset order, with the step that
-- removes it (`removed_by`, NULL when it stays a candidate for the near-duplicate step).
-- Current = its row in the partition's status file says `completed`: statuses such as
-- `duplicate` or `superseded` exclude a row by themselves.
-- Inputs (registered by the caller): normalized (the normalized layer files), status (the
-- status files), landed_files (partition, source_file, source_sha256, landing_file,
-- registered_at: the batches' manifests), normalized_runs (partition, run_id).
-- Parameters: $min_quality_score, $min_confidence (NULL = no filter),
-- $required_annotations (annotation names that must not be empty).
-- Filters come first and remove a row under the first one it fails; exact duplicates
-- (same normalized content hash) are then counted among the rows that passed them, the
-- first in dataset order staying. Dataset order: the batch registered first, then record
-- order, so a batch landed later never displaces a line kept before.
WITH current_rows AS (
    SELECT
        n.partition,
        n.record_index,
        n.conversation_id,
        n.source_file,
        n.position,
        n.content_hash AS record_sha256,
        n.enrichment.enricher AS enricher,
        n.enrichment.model AS model,
        n.enrichment.prompt_version AS prompt_version,
        n.enrichment.quality_score AS quality_score,
        n.enrichment.confidence AS confidence,
        list_filter([
            CASE WHEN nullif(trim(n.enrichment.summary), '') IS NULL THEN 'summary' END,
            CASE WHEN coalesce(len(n.enrichment.topics), 0) = 0 THEN 'topics' END,
            CASE WHEN n.enrichment.emotional_tone IS NULL THEN 'emotional_tone' END,
            CASE WHEN n.enrichment.sentiment IS NULL THEN 'sentiment' END,
            CASE WHEN n.enrichment.label IS NULL THEN 'label' END,
            CASE WHEN n.enrichment.confidence IS NULL THEN 'confidence' END,
            CASE WHEN n.enrichment.quality_score IS NULL THEN 'quality_score' END
        ], lambda a: a IS NOT NULL) AS missing_annotations,
        -- Normalized content: roles and case-folded text with whitespace runs collapsed;
        -- ids, timestamps and annotations are not content. The replace runs only on text
        -- that has a run or a tab/newline to collapse (a regex per message is the cost here).
        sha256(array_to_string(list_transform(
            n.messages,
            lambda m: m.role || chr(31) || lower(trim(
                CASE
                    WHEN regexp_matches(m.content, '\s\s|[\t\n\r\f\v]')
                        THEN regexp_replace(m.content, '\s+', ' ', 'g')
                    ELSE m.content
                END
            ))
        ), chr(30))) AS content_hash
    FROM normalized AS n
    JOIN status AS s USING (partition, record_index)
    WHERE s.status = 'completed'
),
filtered AS (
    SELECT
        r.*,
        f.source_sha256,
        f.landing_file,
        f.registered_at,
        runs.run_id,
        CASE
            WHEN $min_quality_score IS NOT NULL
                AND coalesce(r.quality_score < $min_quality_score, true)
                THEN 'below_min_quality_score'
            WHEN $min_confidence IS NOT NULL
                AND coalesce(r.confidence < $min_confidence, true)
                THEN 'below_min_confidence'
            WHEN len(list_intersect(r.missing_annotations, $required_annotations::VARCHAR[])) > 0
                THEN 'missing_annotations'
        END AS filtered_by
    FROM current_rows AS r
    LEFT JOIN landed_files AS f USING (partition, source_file)
    LEFT JOIN normalized_runs AS runs USING (partition)
)
SELECT
    partition,
    record_index,
    conversation_id,
    source_file,
    source_sha256,
    landing_file,
    position,
    record_sha256,
    run_id,
    enricher,
    model,
    prompt_version,
    content_hash,
    coalesce(filtered_by, CASE
        WHEN row_number() OVER (
            PARTITION BY content_hash, filtered_by IS NULL
            ORDER BY registered_at, partition, record_index
        ) > 1 THEN 'exact_duplicate'
    END) AS removed_by
FROM filtered
ORDER BY registered_at, partition, record_index
