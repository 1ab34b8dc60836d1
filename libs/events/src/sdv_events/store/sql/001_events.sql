-- Event store of one service, in its own schema. Idempotent: safe to run at every start.
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.events (
    global_position bigserial PRIMARY KEY,
    stream_id       text        NOT NULL,
    version         integer     NOT NULL CHECK (version > 0),
    event_id        uuid        NOT NULL UNIQUE,
    type            text        NOT NULL,
    schema_version  smallint    NOT NULL,
    data            bytea       NOT NULL,
    metadata        bytea       NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    -- The writing transaction, kept for audits. No longer a cursor: transaction ids restart
    -- in a restored cluster, positions (a sequence pg_dump restores) do not.
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (stream_id, version)
);
-- DDL on `events` below runs only when missing: even a no-op CREATE INDEX IF NOT EXISTS or
-- CREATE OR REPLACE TRIGGER locks the table against appends until the setup commits, and an
-- ALTER TABLE would deadlock with them. (The old `events_tx_cursor` index, of the cursor that
-- compared transaction ids, is no longer created.)
-- Positions must be drawn in the order appends take them: with a sequence CACHE above 1 a
-- session hands out numbers from its own block, below another session's later ones, and a
-- tailer reading up to the safe head would step over them (EventStore.safe_head). pg_dump
-- carries a CACHE setting over, so it is checked at every start.
DO $$ BEGIN
    IF (SELECT cache_size FROM pg_sequences WHERE schemaname = '{schema}'
        AND sequencename = 'events_global_position_seq') <> 1 THEN
        ALTER SEQUENCE {schema}.events_global_position_seq CACHE 1;
    END IF;
END $$;
DO $$ BEGIN
    IF to_regclass('{schema}.events_recorded_at') IS NULL THEN
        CREATE INDEX events_recorded_at ON {schema}.events (recorded_at);
    END IF;
END $$;

-- Defence in depth behind EventStore.append's typed size check: a row the relay could never
-- publish (NATS max_payload is 1 MiB, the envelope adds its fields) is refused by the table.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'events_bounded' AND conrelid = '{schema}.events'::regclass) THEN
        ALTER TABLE {schema}.events ADD CONSTRAINT events_bounded
            CHECK (octet_length(data) + octet_length(metadata) <= 900000) NOT VALID;
    END IF;
END $$;

-- Legacy command ids (global, never pruned by their writer): still written by a previous
-- release's replicas during a rolling deploy and read as a fallback for keys recorded before the
-- upgrade. Idempotency keys now live in `idempotency_keys` (002_idempotency.sql). Drop later.
CREATE TABLE IF NOT EXISTS {schema}.commands (
    command_id  text        PRIMARY KEY,
    stream_id   text        NOT NULL,
    outcome     bytea       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Cursors of log tailers (relay) and projections.
CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
    name       text        PRIMARY KEY,
    tx_id      xid8        NOT NULL DEFAULT '0',
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION {schema}.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % on %.% refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'SDV02';
END $$;

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_append_only'
                   AND tgrelid = '{schema}.events'::regclass) THEN
        CREATE TRIGGER events_append_only
            BEFORE UPDATE OR DELETE ON {schema}.events
            FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_change();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_no_truncate'
                   AND tgrelid = '{schema}.events'::regclass) THEN
        CREATE TRIGGER events_no_truncate
            BEFORE TRUNCATE ON {schema}.events
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_change();
    END IF;
END $$;

-- One round trip, one transaction: check the expected version, bind the command's idempotency
-- key to its outcome, insert the events. p_expected: -1 = any version, 0 = stream must not
-- exist, n = exactly n. The key is (p_command, p_command_id) with p_fingerprint, kept for p_ttl.
-- The 10-argument form of the previous release is dropped, so its callers (old replicas in a
-- rolling deploy, passing no p_command) reach this one and write the legacy `commands` table.
DROP FUNCTION IF EXISTS {schema}.append_events(
    text, integer, uuid[], text[], smallint[], bytea[], bytea[], timestamptz[], text, bytea);
CREATE OR REPLACE FUNCTION {schema}.append_events(
    p_stream text, p_expected integer, p_ids uuid[], p_types text[], p_schema_versions smallint[],
    p_data bytea[], p_meta bytea[], p_occurred timestamptz[], p_command_id text, p_outcome bytea,
    p_command text DEFAULT NULL, p_fingerprint text DEFAULT NULL, p_ttl interval DEFAULT NULL
) RETURNS TABLE (next_version integer, positions bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(p_ids, 1), 0);
    cur integer;
    appended bigint[];
BEGIN
    -- Held from before this transaction draws a position until its commit is visible (xact
    -- locks are released after that): a shared lock, so appends run concurrently, and a
    -- reader can list the appends of this schema still in flight — the only ones that may
    -- yet commit a position below the highest it sees (EventStore.safe_head, relay.py).
    PERFORM pg_advisory_xact_lock_shared(hashtext('sdv_append'), hashtext('{schema}'));
    -- One append per stream at a time, to its commit: versions of a stream get positions in
    -- version order, and the version check below cannot race.
    PERFORM pg_advisory_xact_lock(hashtext('{schema}'), hashtext(p_stream));
    SELECT coalesce(max(e.version), 0) INTO cur FROM {schema}.events e WHERE e.stream_id = p_stream;
    IF p_expected <> -1 AND cur <> p_expected THEN
        RAISE EXCEPTION 'stream % is at version %, expected %', p_stream, cur, p_expected
            USING ERRCODE = 'SDV01', DETAIL = cur::text;
    END IF;
    IF p_command IS NOT NULL THEN
        -- Bind the key, or take over an expired binding (an expired key is a new key). A live
        -- binding stays: SDV03 tells the caller to read it (same request: its first outcome;
        -- another request: a conflict). Nothing of this append is kept.
        INSERT INTO {schema}.idempotency_keys AS k
            (command, command_id, fingerprint, stream_id, outcome, expires_at)
        VALUES (p_command, p_command_id, p_fingerprint, p_stream, p_outcome, now() + p_ttl)
        ON CONFLICT (command, command_id) DO UPDATE
            SET fingerprint = excluded.fingerprint, stream_id = excluded.stream_id,
                outcome = excluded.outcome, recorded_at = excluded.recorded_at,
                expires_at = excluded.expires_at
            WHERE k.expires_at <= now();
        IF NOT FOUND THEN
            RAISE EXCEPTION 'command id % of % is already bound', p_command_id, p_command
                USING ERRCODE = 'SDV03';
        END IF;
    ELSIF p_command_id IS NOT NULL THEN
        INSERT INTO {schema}.commands (command_id, stream_id, outcome)
        VALUES (p_command_id, p_stream, p_outcome);
    END IF;
    IF n = 0 THEN
        RETURN QUERY SELECT cur, ARRAY[]::bigint[];
        RETURN;
    END IF;
    WITH ins AS (
        INSERT INTO {schema}.events
            (stream_id, version, event_id, type, schema_version, data, metadata, occurred_at)
        SELECT p_stream, cur + i, p_ids[i], p_types[i], p_schema_versions[i], p_data[i], p_meta[i],
               p_occurred[i]
        FROM generate_subscripts(p_ids, 1) AS i
        ORDER BY i
        RETURNING global_position
    )
    -- Concurrent inserts may interleave sequence values, so return each row's own position.
    SELECT array_agg(ins.global_position ORDER BY ins.global_position) INTO appended FROM ins;
    -- The stream's hash chain (003_hash_chain.sql) grows in the same transaction, under the
    -- stream's lock taken above.
    PERFORM {schema}.chain_stream(p_stream);
    RETURN QUERY SELECT cur + n, appended;
END $$;
