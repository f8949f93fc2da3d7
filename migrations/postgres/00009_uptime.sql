-- +goose Up
-- Uptime: the probe's consecutive failures, since when the instance has not answered (its
-- first failed probe in the row) and since when it is degraded (NULL: healthy). Degraded
-- is a health flag, never a status: billing does not read it.
ALTER TABLE instances ADD COLUMN probe_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN down_since TIMESTAMPTZ;
ALTER TABLE instances ADD COLUMN degraded_since TIMESTAMPTZ;

-- What the operator has already been alerted about (the doctor's findings, throttled
-- alerts), by key, so that a restart sends no repeat alerts.
CREATE TABLE operator_alerts (
    key        TEXT PRIMARY KEY,
    detail     TEXT NOT NULL,
    alerted_at TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE operator_alerts;
ALTER TABLE instances DROP COLUMN degraded_since;
ALTER TABLE instances DROP COLUMN down_since;
ALTER TABLE instances DROP COLUMN probe_failures;
