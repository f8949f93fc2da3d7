-- +goose Up
-- Off-site backups. status: local (on its host only), uploaded (in the bucket, its
-- ciphertext's SHA-256 verified there), failed (not taken, or its upload gave up: error
-- says why), pruned (gone everywhere, by retention). on_host: the archive is still on host.
-- data_key_sealed: the archive's own age identity, sealed under the master key (empty for
-- an archive taken before encryption). An instance being moved names its target host in
-- moving_to, so that the doctor and other actions leave it alone meanwhile.
ALTER TABLE backups ADD COLUMN status TEXT NOT NULL DEFAULT 'local';
ALTER TABLE backups ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN on_host BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE backups ADD COLUMN object_key TEXT NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN data_key_sealed TEXT NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN error TEXT NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN uploaded_at TIMESTAMPTZ;
ALTER TABLE backups ADD COLUMN pruned_at TIMESTAMPTZ;
CREATE INDEX backups_status ON backups (status, created_at);
ALTER TABLE instances ADD COLUMN moving_to TEXT;

-- +goose Down
ALTER TABLE instances DROP COLUMN moving_to;
DROP INDEX backups_status;
ALTER TABLE backups DROP COLUMN pruned_at;
ALTER TABLE backups DROP COLUMN uploaded_at;
ALTER TABLE backups DROP COLUMN error;
ALTER TABLE backups DROP COLUMN data_key_sealed;
ALTER TABLE backups DROP COLUMN object_key;
ALTER TABLE backups DROP COLUMN on_host;
ALTER TABLE backups DROP COLUMN name;
ALTER TABLE backups DROP COLUMN status;
