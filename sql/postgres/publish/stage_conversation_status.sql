-- Staging table for one partition's statuses; dropped with the transaction.
-- Without the target's keys and checks: the merge below is where they bite,
-- inside the same transaction.
CREATE TEMP TABLE conversation_status_staging
    (LIKE conversation_status INCLUDING DEFAULTS)
    ON COMMIT DROP
