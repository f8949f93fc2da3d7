-- +goose Up
-- A subscription has at most one live instance, even when two billing events for it are
-- processed at the same moment by two workers.
CREATE UNIQUE INDEX instances_one_live_per_subscription ON instances (subscription_id)
    WHERE status NOT IN ('deleted', 'failed');

-- +goose Down
DROP INDEX instances_one_live_per_subscription;
