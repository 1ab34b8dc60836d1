-- Devices' presence as the registry's heartbeat tracking last said (projections.Presence feeds
-- it from DeviceCameOnline / DeviceWentOffline through adapters/presence_view.py, which the
-- ticker asks about devices past their deadline).
-- Idempotent: applied at every start, and in a rebuild's shadow schema.
CREATE TABLE IF NOT EXISTS {schema}.device_presence (
    device_id text PRIMARY KEY,
    online    boolean     NOT NULL,
    at        timestamptz NOT NULL
);
