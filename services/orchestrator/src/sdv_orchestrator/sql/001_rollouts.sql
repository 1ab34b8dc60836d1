-- Rollouts: one summary row per rollout (projections.RolloutCatalog feeds it from the
-- orchestrator's rollout events through adapters/rollouts_view.py, which holds every query of
-- it: the list, the ticker's active rollouts, a policy's fleet version).
-- Idempotent: applied at every start, and in a rebuild's shadow schema.
-- `reservations` is not here: it is the write side's (adapters/reservations.py), and a rebuild
-- of this read model must not touch it.
CREATE TABLE IF NOT EXISTS {schema}.rollouts (
    rollout_id    text PRIMARY KEY,
    app           text        NOT NULL,
    version       text        NOT NULL,
    status        text        NOT NULL,
    devices       integer     NOT NULL DEFAULT 0,
    succeeded     integer     NOT NULL DEFAULT 0,
    failed        integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    rollback_open boolean     NOT NULL DEFAULT false
);

-- `rollback_open` (rolled back, devices still followed: the ticker looks after it) was added
-- later. A table made before it gets it set for its rolled back rollouts: the ticker then
-- closes their rollbacks (their devices' rollback deadlines are long past).
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = '{schema}' AND table_name = 'rollouts'
                   AND column_name = 'rollback_open') THEN
        ALTER TABLE {schema}.rollouts ADD COLUMN rollback_open boolean NOT NULL DEFAULT false;
        UPDATE {schema}.rollouts SET rollback_open = (status = 'rolled_back');
    END IF;
END $$;

-- Vehicle-aware scheduling (#15): the rollout's schedule (encoded; NULL: none), added later.
ALTER TABLE {schema}.rollouts ADD COLUMN IF NOT EXISTS schedule bytea;
