-- Fleet: one row per device (projections/fleet.py feeds it from the registry's device events;
-- queries.py, adapters/alert_watch.py and adapters/metrics.py read it).
-- Idempotent: applied at every start, and in a rebuild's shadow schema.
CREATE TABLE IF NOT EXISTS {schema}.devices (
    device_id     text PRIMARY KEY,
    status        text        NOT NULL,
    online        boolean     NOT NULL DEFAULT false,
    last_seen_at  timestamptz,
    labels        jsonb       NOT NULL DEFAULT '{}',
    capabilities  jsonb,
    agent_version text,
    arch          text,
    hardware_type text,
    admitted_by   text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
-- Index names embed the schema: a rebuild's swap renames them from the shadow's to the live one's.
CREATE INDEX IF NOT EXISTS {schema}_devices_status ON {schema}.devices (status, online);
