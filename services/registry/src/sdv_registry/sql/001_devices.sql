-- The device inventory read model (adapters/inventory_view.py owns it; projections.py feeds it).
-- Idempotent: applied at every start, and in a rebuild's shadow schema.
CREATE TABLE IF NOT EXISTS {schema}.devices (
    device_id    text PRIMARY KEY,
    status       text        NOT NULL,
    public_key   text,
    capabilities bytea,                          -- msgspec JSON of Capabilities
    labels       jsonb       NOT NULL DEFAULT '{}',
    online       boolean     NOT NULL DEFAULT false,
    last_seen_at timestamptz,
    admitted_by  text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    version      integer     NOT NULL            -- the device stream's version last applied
);
-- Selectors are jsonb containment (`labels @> …`) and key tests: a GIN index serves both.
CREATE INDEX IF NOT EXISTS {schema}_devices_labels ON {schema}.devices USING gin (labels);
CREATE INDEX IF NOT EXISTS {schema}_devices_status ON {schema}.devices (status, online);
