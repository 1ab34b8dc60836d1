-- Command idempotency keys (see sdv_events/idempotency.py), bound by `append_events` in the
-- transaction of the command's events. Idempotent: safe to run at every start.
CREATE TABLE IF NOT EXISTS {schema}.idempotency_keys (
    command     text        NOT NULL,  -- the command's subject: sdv.cmd.<service>.<command>
    command_id  text        NOT NULL,  -- the client's key
    fingerprint text        NOT NULL,  -- sha256 of the canonical request
    stream_id   text        NOT NULL,
    outcome     bytea       NOT NULL,  -- the first outcome (an accepted command's)
    recorded_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (command, command_id)
);

-- Only when missing: CREATE INDEX IF NOT EXISTS takes a SHARE lock on the table even when the
-- index exists, which would hold live appends until the setup transaction commits.
DO $$ BEGIN
    IF to_regclass('{schema}.idempotency_keys_expiry') IS NULL THEN
        CREATE INDEX idempotency_keys_expiry ON {schema}.idempotency_keys (expires_at);
    END IF;
END $$;
