-- quality_gate_facts: per-conversation facts about `messages` that the GX suites
-- in expectations/ check (a list of structs is not a column GX can test).
-- Each macro takes one row's `messages` list; the gate projects them as
-- `messages.<fact>` columns (see enrichment_assets/checks/gate_frame.py).
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
CREATE OR REPLACE MACRO gate_messages_min_content_chars(m) AS
    list_min(list_transform(m, lambda x: length(trim(coalesce(x.content, '')))));
CREATE OR REPLACE MACRO gate_messages_max_timestamp(m) AS
    list_max(list_transform(m, lambda x: x.timestamp));
