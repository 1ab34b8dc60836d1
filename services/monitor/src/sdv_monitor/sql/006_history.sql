-- Per-device action history, one line per event about a device (projections/history.py feeds
-- it from the registry's and the rollouts' events and the devices' facts; queries.py reads it).
-- Idempotent: applied at every start, and in a rebuild's shadow schema.
CREATE TABLE IF NOT EXISTS {schema}.device_history (
    device_id  text        NOT NULL,
    event_id   uuid        NOT NULL,
    at         timestamptz NOT NULL,
    source     text        NOT NULL,
    type       text        NOT NULL,
    app        text,
    rollout_id text,
    summary    text        NOT NULL,
    PRIMARY KEY (device_id, event_id)
);
CREATE INDEX IF NOT EXISTS {schema}_device_history_at ON {schema}.device_history (device_id, at);
