-- Staging table for one day's summaries; dropped with the transaction.
CREATE TEMP TABLE conversation_summaries_staging
    (LIKE conversation_summaries INCLUDING DEFAULTS)
    ON COMMIT DROP
