-- Reference metadata the enrichment joins (personas, emotional arcs, training
-- topics, templates): the same columns as the seed files in
-- enrichment_assets/seeds/. IF NOT EXISTS adopts tables the application
-- already keeps, as long as they carry these columns.
CREATE TABLE IF NOT EXISTS personas (
    persona_id          text PRIMARY KEY,
    name                text NOT NULL,
    description         text,
    communication_style text
);

CREATE TABLE IF NOT EXISTS emotional_arcs (
    emotional_arc_id text PRIMARY KEY,
    name             text NOT NULL,
    description      text,
    start_emotion    text,
    end_emotion      text
);

CREATE TABLE IF NOT EXISTS training_topics (
    training_topic_id text PRIMARY KEY,
    name              text NOT NULL,
    domain            text,
    difficulty        text
);

CREATE TABLE IF NOT EXISTS templates (
    template_id text PRIMARY KEY,
    name        text NOT NULL,
    tier        text,
    description text
);
