-- The warm pool. A pool member is an instance in status 'warm': its container is started
-- and ready before anyone has paid for it, so it has no client until a payment claims it.
--
-- The saga now starts the container before it creates the DNS record (the host phase,
-- which a pool member runs before any customer exists, then the hand-over phase). An
-- instance stored at step 'dns' under the old order has no container yet: it goes back to
-- 'placed', so it launches first and creates its (idempotent) record after readiness.

-- +goose Up
ALTER TABLE instances ALTER COLUMN client_id DROP NOT NULL;
ALTER TABLE instances DROP CONSTRAINT instances_status_check;
ALTER TABLE instances ADD CONSTRAINT instances_status_check
    CHECK (status IN ('warm', 'pending', 'provisioning', 'active', 'suspended', 'deleting', 'deleted', 'failed'));
UPDATE instances SET step = 'placed' WHERE step = 'dns' AND status IN ('pending', 'provisioning');
-- The claim looks for a ready member of a plan.
CREATE INDEX instances_warm ON instances (plan_id, host) WHERE status = 'warm';

-- +goose Down
DROP INDEX instances_warm;
DELETE FROM instance_events WHERE instance_id IN (SELECT id FROM instances WHERE client_id IS NULL);
DELETE FROM backups WHERE instance_id IN (SELECT id FROM instances WHERE client_id IS NULL);
DELETE FROM instances WHERE client_id IS NULL;
ALTER TABLE instances DROP CONSTRAINT instances_status_check;
ALTER TABLE instances ADD CONSTRAINT instances_status_check
    CHECK (status IN ('pending', 'provisioning', 'active', 'suspended', 'deleting', 'deleted', 'failed'));
ALTER TABLE instances ALTER COLUMN client_id SET NOT NULL;
