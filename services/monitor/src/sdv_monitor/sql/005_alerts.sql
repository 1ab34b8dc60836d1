-- Alerts: one row per alert, raised → acknowledged → resolved (projections/alerts.py feeds it
-- from the monitor's own alert events; queries.py and adapters/metrics.py read it).
-- Idempotent: applied at every start, and in a rebuild's shadow schema.
CREATE TABLE IF NOT EXISTS {schema}.alerts (
    alert_id        text PRIMARY KEY,
    kind            text        NOT NULL,
    subject         text        NOT NULL,
    severity        text        NOT NULL,
    state           text        NOT NULL,
    message         text        NOT NULL,
    device_id       text,
    rollout_id      text,
    raised_at       timestamptz NOT NULL,
    acknowledged_by text,
    acknowledged_at timestamptz,
    resolved_at     timestamptz,
    resolution      text
);
CREATE INDEX IF NOT EXISTS {schema}_alerts_state ON {schema}.alerts (state, raised_at);
