-- summary_messages, from now on the one day read by conversation_summaries_day_messages.sql.
CREATE OR REPLACE TEMP VIEW summary_messages AS
SELECT * FROM day_summary_messages
