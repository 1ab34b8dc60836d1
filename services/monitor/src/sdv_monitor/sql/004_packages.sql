-- Packages: every published version with its channel and yank state (projections/packages.py
-- feeds it from the packager's events; queries.py reads it).
-- Idempotent: applied at every start, and in a rebuild's shadow schema.
CREATE TABLE IF NOT EXISTS {schema}.packages (
    name         text        NOT NULL,
    version      text        NOT NULL,
    digest       text        NOT NULL,
    channel      text        NOT NULL,
    runtime      text        NOT NULL,
    size         bigint      NOT NULL,
    key_id       text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    yanked       boolean     NOT NULL DEFAULT false,
    yank_reason  text,
    published_at timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (name, version)
);
