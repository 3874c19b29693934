-- The versions of each conversation id, over `identity_rows` (registered by the caller:
-- partition, record_index, conversation_id, record_hash, landed_at, source_file, position),
-- one row per first occurrence of an id in a batch partition.
--
-- A version is a distinct content (record_hash) of an id; it was landed where it occurred
-- first (landing time, then partition key, then record position: a total order). The
-- current version of an id is the one whose first occurrence landed last: the newest
-- landed content wins, and content already in the lake never becomes new again.

-- The first occurrence of each (id, content): the record that carries that version.
CREATE OR REPLACE TEMP VIEW identity_first_occurrence AS
SELECT *
FROM identity_rows
QUALIFY row_number() OVER (
    PARTITION BY conversation_id, record_hash
    ORDER BY landed_at, partition, record_index
) = 1;

-- The current version of each id: the newest landed first occurrence.
CREATE OR REPLACE TEMP VIEW identity_current AS
SELECT *
FROM identity_first_occurrence
QUALIFY row_number() OVER (
    PARTITION BY conversation_id
    ORDER BY landed_at DESC, partition DESC, record_index DESC
) = 1;
