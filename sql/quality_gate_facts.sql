-- quality_gate_facts: per-conversation facts about `messages` that the GX suites
-- in expectations/ check (a list of structs is not a column GX can test).
-- Each macro takes one row's `messages` list; the gate projects them as
-- `messages.<fact>` columns (see enrichment_assets/checks/gate_frame.py).
-- The Unicode space separators (category Zs): what DuckDB's trim() strips.
CREATE OR REPLACE MACRO gate_space_separators() AS
    [chr(32), chr(160), chr(5760), chr(8192), chr(8193), chr(8194), chr(8195), chr(8196), chr(8197), chr(8198), chr(8199), chr(8200), chr(8201), chr(8202), chr(8239), chr(8287), chr(12288)];
CREATE OR REPLACE MACRO gate_messages_count(m) AS len(m);
CREATE OR REPLACE MACRO gate_messages_user_count(m) AS
    len(list_filter(m, lambda x: x.role = 'user'));
CREATE OR REPLACE MACRO gate_messages_assistant_count(m) AS
    len(list_filter(m, lambda x: x.role = 'assistant'));
-- Distinct roles, sorted and comma-joined: an unknown role shows as itself.
CREATE OR REPLACE MACRO gate_messages_roles(m) AS
    array_to_string(
        list_sort(list_distinct(list_transform(m, lambda x: coalesce(x.role, '<null>')))), ','
    );
-- Characters after trim(). trim() strips the space separators (Unicode category Zs) at
-- either end and copies the string; most messages have none there, so their length is
-- taken as is (the same number, without the copy).
CREATE OR REPLACE MACRO gate_trimmed_length(s) AS
    CASE
        WHEN list_contains(gate_space_separators(), left(s, 1))
            OR list_contains(gate_space_separators(), right(s, 1))
        THEN length(trim(s))
        ELSE length(s)
    END;
CREATE OR REPLACE MACRO gate_messages_min_content_chars(m) AS
    list_min(list_transform(m, lambda x: gate_trimmed_length(coalesce(x.content, ''))));
CREATE OR REPLACE MACRO gate_messages_max_timestamp(m) AS
    list_max(list_transform(m, lambda x: x.timestamp));
