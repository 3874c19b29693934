-- first_sentence(text): the text up to and including its first . ! or ? that ends a word
-- (a text without one is a single sentence), whitespace collapsed; NULL when blank.
-- Scans only as far as the first sentence, so it stays cheap on long messages.
CREATE TEMP MACRO first_sentence(text) AS nullif(
    trim(regexp_replace(
        coalesce(
            nullif(regexp_extract(text, '(?s)^\s*(.*?[.!?])(\s|$)', 1), ''),
            left(text, 2000)
        ),
        '\s+', ' ', 'g'
    )),
    ''
);
