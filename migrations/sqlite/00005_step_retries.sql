-- +goose Up
-- The saga's retry state for the step it is on: how many attempts of it failed, since when
-- it has been blocked (failing or waiting), and whether the operator has been told. It is
-- stored, not kept in memory, so a restart or a takeover keeps the step's deadline.
ALTER TABLE instances ADD COLUMN step_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN step_blocked_since DATETIME;
ALTER TABLE instances ADD COLUMN step_alerted BOOLEAN NOT NULL DEFAULT FALSE;

-- +goose Down
ALTER TABLE instances DROP COLUMN step_alerted;
ALTER TABLE instances DROP COLUMN step_blocked_since;
ALTER TABLE instances DROP COLUMN step_attempts;
