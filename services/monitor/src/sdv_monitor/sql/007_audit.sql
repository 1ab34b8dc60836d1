-- The audit trail: every event and recorded device fact, one row each (projections/audit.py
-- feeds it; audit_queries.py reads it, and queries.py a rollout's terms from its first event).
-- Idempotent: applied at every start, and in a rebuild's shadow schema.
CREATE TABLE IF NOT EXISTS {schema}.audit_events (
    event_id       uuid PRIMARY KEY,
    service        text        NOT NULL,
    stream_id      text        NOT NULL,
    version        integer     NOT NULL,
    type           text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    actor          text,
    correlation_id text,
    causation_id   text,
    device_id      text,
    rollout_id     text,
    package        text,
    data           json        NOT NULL   -- the event's body as JSON (a fact: the device's own words)
);
-- One index per filter of `sdv audit` (audit_queries.py), each in time order.
CREATE INDEX IF NOT EXISTS {schema}_audit_time ON {schema}.audit_events (occurred_at, event_id);
CREATE INDEX IF NOT EXISTS {schema}_audit_stream ON {schema}.audit_events (stream_id, version);
CREATE INDEX IF NOT EXISTS {schema}_audit_device ON {schema}.audit_events (device_id, occurred_at);
CREATE INDEX IF NOT EXISTS {schema}_audit_rollout ON {schema}.audit_events (rollout_id, occurred_at);
CREATE INDEX IF NOT EXISTS {schema}_audit_package ON {schema}.audit_events (package, occurred_at);
CREATE INDEX IF NOT EXISTS {schema}_audit_correlation ON {schema}.audit_events (correlation_id);
CREATE INDEX IF NOT EXISTS {schema}_audit_actor ON {schema}.audit_events (actor, occurred_at);
