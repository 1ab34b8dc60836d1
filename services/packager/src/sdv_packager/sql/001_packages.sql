-- The package catalog read model (adapters/catalog_view.py owns it; projections.py feeds it).
-- Idempotent: applied at every start, and in a rebuild's shadow schema.
CREATE TABLE IF NOT EXISTS {schema}.packages (
    name         text        NOT NULL,
    version      text        NOT NULL,
    digest       text        NOT NULL,
    channel      text        NOT NULL,
    yanked       boolean     NOT NULL DEFAULT false,
    yank_reason  text,
    info         bytea       NOT NULL,           -- msgspec JSON of PackageInfo
    published_at timestamptz NOT NULL,
    PRIMARY KEY (name, version)
);
