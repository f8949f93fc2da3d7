-- +goose Up
-- A host VM's memory (MiB) and virtual CPUs as Proxmox allocates them, read when the host
-- is added or refreshed (0: not read yet). Placement commits the instances' plan memory
-- against memory_mb (and their disk quotas against disk_gb); max_instances becomes an
-- optional cap, 0 meaning none for a host whose memory is known.
ALTER TABLE hosts ADD COLUMN memory_mb INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN cpus INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE hosts DROP COLUMN cpus;
ALTER TABLE hosts DROP COLUMN memory_mb;
