-- The warm pool. A pool member is an instance in status 'warm': its container is started
-- and ready before anyone has paid for it, so it has no client until a payment claims it.
-- SQLite cannot change a column's constraints: the table is rebuilt
-- (https://www.sqlite.org/lang_altertable.html#otheralter) with foreign keys off, so
-- instance_events and backups keep pointing at it. goose runs a NO TRANSACTION migration
-- on one connection, so the pragmas apply to it.
--
-- The saga now starts the container before it creates the DNS record (the host phase,
-- which a pool member runs before any customer exists, then the hand-over phase). An
-- instance stored at step 'dns' under the old order has no container yet: it goes back to
-- 'placed', so it launches first and creates its (idempotent) record after readiness.

-- +goose NO TRANSACTION
-- +goose Up
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE instances_new (
    id                    TEXT PRIMARY KEY,
    client_id             TEXT REFERENCES clients (id),
    subscription_id       TEXT REFERENCES subscriptions (id),
    slug                  TEXT NOT NULL UNIQUE,
    url                   TEXT NOT NULL,
    host                  TEXT REFERENCES hosts (name),
    plan_id               TEXT NOT NULL,
    cpus                  REAL NOT NULL,
    memory_mb             INTEGER NOT NULL,
    n8n_image             TEXT NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('warm', 'pending', 'provisioning', 'active', 'suspended', 'deleting', 'deleted', 'failed')),
    step                  TEXT NOT NULL DEFAULT '',
    owner_email           TEXT NOT NULL,
    owner_password_sealed TEXT NOT NULL,
    encryption_key_sealed TEXT NOT NULL,
    setup_guard_sealed    TEXT NOT NULL DEFAULT '',
    dns_record_id         TEXT NOT NULL DEFAULT '',
    suspend_reason        TEXT NOT NULL DEFAULT '' CHECK (suspend_reason IN ('', 'billing', 'manual')),
    failure_reason        TEXT NOT NULL DEFAULT '',
    delete_after          DATETIME,
    emailed_at            DATETIME,
    created_at            DATETIME NOT NULL,
    updated_at            DATETIME NOT NULL,
    suspend_at            DATETIME,
    step_attempts         INTEGER NOT NULL DEFAULT 0,
    step_blocked_since    DATETIME,
    step_alerted          BOOLEAN NOT NULL DEFAULT FALSE
);
INSERT INTO instances_new (id, client_id, subscription_id, slug, url, host, plan_id, cpus, memory_mb, n8n_image, status, step, owner_email, owner_password_sealed, encryption_key_sealed, setup_guard_sealed, dns_record_id, suspend_reason, failure_reason, delete_after, emailed_at, created_at, updated_at, suspend_at, step_attempts, step_blocked_since, step_alerted)
SELECT id, client_id, subscription_id, slug, url, host, plan_id, cpus, memory_mb, n8n_image, status, step, owner_email, owner_password_sealed, encryption_key_sealed, setup_guard_sealed, dns_record_id, suspend_reason, failure_reason, delete_after, emailed_at, created_at, updated_at, suspend_at, step_attempts, step_blocked_since, step_alerted FROM instances;
DROP TABLE instances;
ALTER TABLE instances_new RENAME TO instances;
CREATE INDEX instances_client ON instances (client_id, id);
CREATE INDEX instances_status ON instances (status, id);
CREATE INDEX instances_host ON instances (host, id);
CREATE INDEX instances_subscription ON instances (subscription_id);
CREATE INDEX instances_suspend_at ON instances (suspend_at);
CREATE INDEX instances_delete_after ON instances (delete_after);
CREATE UNIQUE INDEX instances_one_live_per_subscription ON instances (subscription_id)
    WHERE status NOT IN ('deleted', 'failed');
-- The claim looks for a ready member of a plan.
CREATE INDEX instances_warm ON instances (plan_id, host) WHERE status = 'warm';
UPDATE instances SET step = 'placed' WHERE step = 'dns' AND status IN ('pending', 'provisioning');
COMMIT;
PRAGMA foreign_keys = ON;

-- +goose Down
PRAGMA foreign_keys = OFF;
BEGIN;
DELETE FROM instance_events WHERE instance_id IN (SELECT id FROM instances WHERE client_id IS NULL);
DELETE FROM backups WHERE instance_id IN (SELECT id FROM instances WHERE client_id IS NULL);
DELETE FROM instances WHERE client_id IS NULL;
CREATE TABLE instances_old (
    id                    TEXT PRIMARY KEY,
    client_id             TEXT NOT NULL REFERENCES clients (id),
    subscription_id       TEXT REFERENCES subscriptions (id),
    slug                  TEXT NOT NULL UNIQUE,
    url                   TEXT NOT NULL,
    host                  TEXT REFERENCES hosts (name),
    plan_id               TEXT NOT NULL,
    cpus                  REAL NOT NULL,
    memory_mb             INTEGER NOT NULL,
    n8n_image             TEXT NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('pending', 'provisioning', 'active', 'suspended', 'deleting', 'deleted', 'failed')),
    step                  TEXT NOT NULL DEFAULT '',
    owner_email           TEXT NOT NULL,
    owner_password_sealed TEXT NOT NULL,
    encryption_key_sealed TEXT NOT NULL,
    setup_guard_sealed    TEXT NOT NULL DEFAULT '',
    dns_record_id         TEXT NOT NULL DEFAULT '',
    suspend_reason        TEXT NOT NULL DEFAULT '' CHECK (suspend_reason IN ('', 'billing', 'manual')),
    failure_reason        TEXT NOT NULL DEFAULT '',
    delete_after          DATETIME,
    emailed_at            DATETIME,
    created_at            DATETIME NOT NULL,
    updated_at            DATETIME NOT NULL,
    suspend_at            DATETIME,
    step_attempts         INTEGER NOT NULL DEFAULT 0,
    step_blocked_since    DATETIME,
    step_alerted          BOOLEAN NOT NULL DEFAULT FALSE
);
INSERT INTO instances_old (id, client_id, subscription_id, slug, url, host, plan_id, cpus, memory_mb, n8n_image, status, step, owner_email, owner_password_sealed, encryption_key_sealed, setup_guard_sealed, dns_record_id, suspend_reason, failure_reason, delete_after, emailed_at, created_at, updated_at, suspend_at, step_attempts, step_blocked_since, step_alerted)
SELECT id, client_id, subscription_id, slug, url, host, plan_id, cpus, memory_mb, n8n_image, status, step, owner_email, owner_password_sealed, encryption_key_sealed, setup_guard_sealed, dns_record_id, suspend_reason, failure_reason, delete_after, emailed_at, created_at, updated_at, suspend_at, step_attempts, step_blocked_since, step_alerted FROM instances;
DROP TABLE instances;
ALTER TABLE instances_old RENAME TO instances;
CREATE INDEX instances_client ON instances (client_id, id);
CREATE INDEX instances_status ON instances (status, id);
CREATE INDEX instances_host ON instances (host, id);
CREATE INDEX instances_subscription ON instances (subscription_id);
CREATE INDEX instances_suspend_at ON instances (suspend_at);
CREATE INDEX instances_delete_after ON instances (delete_after);
CREATE UNIQUE INDEX instances_one_live_per_subscription ON instances (subscription_id)
    WHERE status NOT IN ('deleted', 'failed');
COMMIT;
PRAGMA foreign_keys = ON;
