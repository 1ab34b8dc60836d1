-- Desired states: per device the app assignments the rollouts made, and what a document needs
-- (projections.DesiredStates feeds them from the rollout events and writes the signed
-- documents to KV `sdv_desired`; application.py reads a device's current package to roll back
-- to, policies.py a rollout's package).
-- Idempotent: applied at every start, and in a rebuild's shadow schema.

-- A rollout's package (fixed at RolloutCreated).
CREATE TABLE IF NOT EXISTS {schema}.rollout_packages (
    rollout_id text PRIMARY KEY,
    package    bytea NOT NULL
);

-- What each device should run, per app, and the rollout that assigned it.
CREATE TABLE IF NOT EXISTS {schema}.device_apps (
    device_id  text  NOT NULL,
    app        text  NOT NULL,
    package    bytea NOT NULL,
    rollout_id text,
    PRIMARY KEY (device_id, app)
);
-- Added later: a rollback's restored assignment; a device held until its activation.
ALTER TABLE {schema}.device_apps ADD COLUMN IF NOT EXISTS rollback boolean NOT NULL DEFAULT false;
ALTER TABLE {schema}.device_apps ADD COLUMN IF NOT EXISTS held boolean NOT NULL DEFAULT false;

-- A rollout's activation gates and hold (its schedule), when it defers its devices.
CREATE TABLE IF NOT EXISTS {schema}.rollout_activations (
    rollout_id text PRIMARY KEY,
    gates      text[]  NOT NULL,
    hold       boolean NOT NULL
);

-- Each device's document revision (carried over into a rebuild: agents ignore older ones).
CREATE TABLE IF NOT EXISTS {schema}.device_revisions (
    device_id text PRIMARY KEY,
    revision  bigint NOT NULL
);

-- A rollout's previous packages (from its plan chunks) and what each device ran before it,
-- for its rollback.
CREATE TABLE IF NOT EXISTS {schema}.rollout_previous_packages (
    rollout_id text    NOT NULL,
    ref        integer NOT NULL,
    package    bytea   NOT NULL,
    PRIMARY KEY (rollout_id, ref)
);

CREATE TABLE IF NOT EXISTS {schema}.rollout_previous (
    rollout_id text    NOT NULL,
    device_id  text    NOT NULL,
    ref        integer NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
);

-- The trace a rollout's agents' work joins.
CREATE TABLE IF NOT EXISTS {schema}.rollout_traces (
    rollout_id  text PRIMARY KEY,
    traceparent text NOT NULL,
    tracestate  text
);

-- Devices whose documents must be written to KV once the read model's transaction has
-- committed (drained after every commit and at start; not rebuilt: a rebuild marks every
-- device for a check after its swap).
CREATE TABLE IF NOT EXISTS {schema}.desired_dirty (
    device_id text PRIMARY KEY,
    at        timestamptz NOT NULL,
    verify    boolean     NOT NULL DEFAULT false,
    gen       bigint      NOT NULL DEFAULT 1
);
