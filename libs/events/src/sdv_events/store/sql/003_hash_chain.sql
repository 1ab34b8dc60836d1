-- Tamper evidence: a hash chain per stream. Each event's hash covers the previous event's hash
-- and everything recorded of the event (stream, version, id, type, schema version, when it
-- happened and was recorded, body, metadata), so an edited, removed or reordered event breaks
-- the chain from there on (EventStore.verify_chain, `sdv audit verify`). Kept in a table of its
-- own: `events` is never altered (see 001), and the chain is append-only like the events.
CREATE TABLE IF NOT EXISTS {schema}.event_hashes (
    stream_id       text    NOT NULL,
    version         integer NOT NULL,
    event_id        uuid    NOT NULL,
    global_position bigint  NOT NULL,
    hash            bytea   NOT NULL,
    PRIMARY KEY (stream_id, version)
);

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'event_hashes_append_only'
                   AND tgrelid = '{schema}.event_hashes'::regclass) THEN
        CREATE TRIGGER event_hashes_append_only
            BEFORE UPDATE OR DELETE ON {schema}.event_hashes
            FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_change();
        CREATE TRIGGER event_hashes_no_truncate
            BEFORE TRUNCATE ON {schema}.event_hashes
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_change();
    END IF;
END $$;

-- The link: sha256(previous hash || header || data || metadata), the header one line per field
-- (times in microseconds since the epoch). sdv_events/store/chain.py computes the same bytes.
CREATE OR REPLACE FUNCTION {schema}.event_link(p_prev bytea, e {schema}.events) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT sha256(p_prev || convert_to(format(E'%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n',
        e.stream_id, e.version, e.event_id, e.type, e.schema_version,
        (extract(epoch FROM e.occurred_at) * 1000000)::bigint,
        (extract(epoch FROM e.recorded_at) * 1000000)::bigint,
        octet_length(e.data), octet_length(e.metadata)), 'UTF8') || e.data || e.metadata)
$$;

-- Extend a stream's chain over its events not chained yet (callers hold the stream's lock:
-- append_events does; the backfill below takes it).
CREATE OR REPLACE FUNCTION {schema}.chain_stream(p_stream text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    prev bytea;
    last integer;
    r {schema}.events;
    n integer := 0;
BEGIN
    SELECT h.hash, h.version INTO prev, last FROM {schema}.event_hashes h
    WHERE h.stream_id = p_stream ORDER BY h.version DESC LIMIT 1;
    IF NOT FOUND THEN
        prev := sha256(convert_to('sdv-chain' || chr(10) || p_stream, 'UTF8'));
        last := 0;
    END IF;
    FOR r IN SELECT * FROM {schema}.events e WHERE e.stream_id = p_stream AND e.version > last
             ORDER BY e.version LOOP
        prev := {schema}.event_link(prev, r);
        INSERT INTO {schema}.event_hashes VALUES (r.stream_id, r.version, r.event_id, r.global_position, prev);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- Streams written before the chain existed are chained once (a marker row says it was done;
-- streams a previous release's replica appends to meanwhile are chained at their next append).
CREATE TABLE IF NOT EXISTS {schema}.chain_backfill (
    done_at timestamptz NOT NULL DEFAULT now()
);
DO $$
DECLARE s text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {schema}.chain_backfill) THEN
        FOR s IN SELECT DISTINCT e.stream_id FROM {schema}.events e LOOP
            PERFORM pg_advisory_xact_lock(hashtext('{schema}'), hashtext(s));
            PERFORM {schema}.chain_stream(s);
        END LOOP;
        INSERT INTO {schema}.chain_backfill DEFAULT VALUES;
    END IF;
END $$;
