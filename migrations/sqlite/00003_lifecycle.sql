-- +goose Up
-- suspend_at: when a past-due instance is suspended if no payment arrives (the grace end).
ALTER TABLE instances ADD COLUMN suspend_at DATETIME;
CREATE INDEX instances_suspend_at ON instances (suspend_at);
CREATE INDEX instances_delete_after ON instances (delete_after);

-- Backups outlive their instance: a deleted customer's data and its sealed encryption key
-- stay until expires_at, so a restore can still decrypt their credentials.
CREATE TABLE backups (
    id                    TEXT PRIMARY KEY,
    instance_id           TEXT NOT NULL REFERENCES instances (id),
    host                  TEXT NOT NULL,
    path                  TEXT NOT NULL,
    sha256                TEXT NOT NULL,
    bytes                 INTEGER NOT NULL,
    n8n_image             TEXT NOT NULL,
    encryption_key_sealed TEXT NOT NULL,
    reason                TEXT NOT NULL,
    created_at            DATETIME NOT NULL,
    expires_at            DATETIME
);
CREATE INDEX backups_instance ON backups (instance_id, created_at);

-- +goose Down
DROP TABLE backups;
DROP INDEX instances_delete_after;
DROP INDEX instances_suspend_at;
ALTER TABLE instances DROP COLUMN suspend_at;
