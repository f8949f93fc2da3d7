-- +goose Up
-- disk_gb: an instance's disk quota in GiB (0: none, as for instances made before it);
-- a host's data disk in GiB as its n8nctl last reported it (0: unknown), which placement
-- compares with the quotas of the instances on it.
ALTER TABLE instances ADD COLUMN disk_gb INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN disk_gb INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE hosts DROP COLUMN disk_gb;
ALTER TABLE instances DROP COLUMN disk_gb;
