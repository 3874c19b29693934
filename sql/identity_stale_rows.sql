-- The records that are no longer the current version of their id, among the ids of
-- partition $partition: its own records that a newer version replaced (not exported by it),
-- and the records of other partitions that its versions replaced (their exports must drop
-- them). Over the views of identity_versions.sql (`identity_rows` = every partition's rows
-- for the ids of $partition).
SELECT
    r.partition,
    r.record_index,
    r.conversation_id,
    c.partition AS current_partition,
    c.record_index AS current_record_index
FROM identity_rows AS r
JOIN identity_current AS c USING (conversation_id)
WHERE NOT (r.partition = c.partition AND r.record_index = c.record_index)
    AND (r.partition = $partition OR c.partition = $partition)
ORDER BY r.partition, r.record_index
