-- Software inventory (projections/inventory.py feeds it: what should run, from the rollout
-- events; what runs, from the devices' recorded facts). queries.py, adapters/alert_watch.py and
-- adapters/metrics.py read device_apps; the other three tables are the projection's own
-- lookups (a rollout's package, what each device ran before it).
-- Idempotent: applied at every start, and in a rebuild's shadow schema.
CREATE TABLE IF NOT EXISTS {schema}.device_apps (
    device_id         text        NOT NULL,
    app               text        NOT NULL,
    desired_version   text,
    desired_digest    text,
    desired_rollout   text,
    installed_version text,
    installed_digest  text,
    state             text        NOT NULL DEFAULT 'PENDING',
    healthy           boolean     NOT NULL DEFAULT false,
    last_error        text,
    fact_rollout      text,
    since             timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (device_id, app)
);
CREATE INDEX IF NOT EXISTS {schema}_device_apps_installed ON {schema}.device_apps (app, installed_version);

-- A rollout's package, for its DeviceTargeted events (which name only the device).
CREATE TABLE IF NOT EXISTS {schema}.inventory_rollouts (
    rollout_id text PRIMARY KEY,
    app        text NOT NULL,
    version    text NOT NULL,
    digest     text NOT NULL
);

-- What each device ran before a rollout, for its rollback: a reference to one of the rollout's
-- previous packages (ref), or the version and digest themselves (version 1 plans: ref = -1).
CREATE TABLE IF NOT EXISTS {schema}.inventory_previous (
    rollout_id text    NOT NULL,
    device_id  text    NOT NULL,
    ref        integer NOT NULL,
    version    text,
    digest     text,
    PRIMARY KEY (rollout_id, device_id)
);

CREATE TABLE IF NOT EXISTS {schema}.inventory_previous_packages (
    rollout_id text    NOT NULL,
    ref        integer NOT NULL,
    version    text    NOT NULL,
    digest     text    NOT NULL,
    PRIMARY KEY (rollout_id, ref)
);
