-- Rollouts: status and counts, waves, per-device outcome, excluded devices (projections/rollouts.py
-- feeds them from the orchestrator's rollout events; queries.py, adapters/alert_watch.py and
-- adapters/metrics.py read them; projections/audit.py looks up a rollout's app in `rollouts`).
-- Idempotent: applied at every start, and in a rebuild's shadow schema.
CREATE TABLE IF NOT EXISTS {schema}.rollouts (
    rollout_id   text PRIMARY KEY,
    app          text        NOT NULL,
    version      text        NOT NULL,
    digest       text        NOT NULL,
    status       text        NOT NULL,
    created_by   text        NOT NULL DEFAULT '',
    target       text        NOT NULL DEFAULT '',
    strategy     text        NOT NULL DEFAULT '',
    devices      integer     NOT NULL DEFAULT 0,
    waves        integer     NOT NULL DEFAULT 0,
    excluded     integer     NOT NULL DEFAULT 0,
    current_wave integer     NOT NULL DEFAULT -1,
    succeeded    integer     NOT NULL DEFAULT 0,
    failed       integer     NOT NULL DEFAULT 0,
    timed_out    integer     NOT NULL DEFAULT 0,
    reason       text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    ended_at     timestamptz
);
CREATE INDEX IF NOT EXISTS {schema}_rollouts_app ON {schema}.rollouts (app, created_at);

-- Columns added later (per-device rollback outcomes): a table made before them gains them here.
-- Kept out of the CREATE above so that an old table and a new one have the same columns in the
-- same order (a rebuild replaces the one by the other).
ALTER TABLE {schema}.rollouts
    ADD COLUMN IF NOT EXISTS rolled_back           integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS rollback_unconfirmed  integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS rollback_completed_at timestamptz;

CREATE TABLE IF NOT EXISTS {schema}.rollout_waves (
    rollout_id   text    NOT NULL,
    wave         integer NOT NULL,
    size         integer NOT NULL DEFAULT 0,
    state        text    NOT NULL DEFAULT 'waiting',
    succeeded    integer NOT NULL DEFAULT 0,
    failed       integer NOT NULL DEFAULT 0,
    started_at   timestamptz,
    completed_at timestamptz,
    PRIMARY KEY (rollout_id, wave)
);

CREATE TABLE IF NOT EXISTS {schema}.rollout_devices (
    rollout_id  text    NOT NULL,
    device_id   text    NOT NULL,
    wave        integer NOT NULL,
    status      text    NOT NULL DEFAULT 'planned',
    targeted_at timestamptz,
    deadline    timestamptz,
    finished_at timestamptz,
    reason      text    NOT NULL DEFAULT '',
    PRIMARY KEY (rollout_id, device_id)
);
CREATE INDEX IF NOT EXISTS {schema}_rollout_devices_device ON {schema}.rollout_devices (device_id);

CREATE TABLE IF NOT EXISTS {schema}.rollout_excluded (
    rollout_id text NOT NULL,
    device_id  text NOT NULL,
    reason     text NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
);

-- Vehicle-aware scheduling (#15): a rollout waiting for its start time or a maintenance window
-- (RolloutWaiting), until when; cleared when it targets again.
ALTER TABLE {schema}.rollouts ADD COLUMN IF NOT EXISTS waiting_reason text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS waiting_until timestamptz;
