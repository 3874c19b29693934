-- Run once by the postgres image on an empty volume: the application
-- database beside Dagster's (POSTGRES_DB). Separate databases, one server.
CREATE DATABASE app;
