-- Macros shared by the export statements.
-- iso_utc: a UTC timestamp as ISO-8601 with a Z, microseconds only when present.
CREATE OR REPLACE MACRO iso_utc(ts) AS
    CASE
        WHEN ts IS NULL THEN NULL
        WHEN microsecond(ts) % 1000000 = 0 THEN strftime(timezone('UTC', ts), '%Y-%m-%dT%H:%M:%SZ')
        ELSE strftime(timezone('UTC', ts), '%Y-%m-%dT%H:%M:%S.%fZ')
    END;
