-- Billing owns subscriptions and billing_events. A subscription is stored when the
-- provider's event arrives, which can be before instances has created the client row
-- (or before any event has said whose the subscription is), so subscriptions.client_id
-- loses its foreign key and may be empty. Same meaning as sqlite/00002_billing.sql.

-- +goose Up
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_client_id_fkey;
ALTER TABLE subscriptions ALTER COLUMN client_id SET DEFAULT '';
ALTER TABLE subscriptions
    ADD COLUMN client_email  TEXT NOT NULL DEFAULT '',
    ADD COLUMN client_name   TEXT NOT NULL DEFAULT '',
    ADD COLUMN client_locale TEXT NOT NULL DEFAULT '',
    ADD COLUMN status_since  TIMESTAMPTZ,
    ADD COLUMN canceled_at   TIMESTAMPTZ,
    ADD COLUMN fetched_at    TIMESTAMPTZ;
UPDATE subscriptions SET status_since = updated_at, fetched_at = provider_updated_at;
ALTER TABLE subscriptions
    ALTER COLUMN status_since SET NOT NULL,
    ALTER COLUMN fetched_at SET NOT NULL,
    ADD CONSTRAINT subscriptions_status CHECK (status IN ('active', 'trialing', 'past_due', 'unpaid', 'canceled', 'incomplete', 'incomplete_expired'));
DROP INDEX subscriptions_client;
CREATE INDEX subscriptions_client ON subscriptions (client_id, updated_at);

-- The provider's own event time (Stripe's `created`), the provider subscription the event
-- is about, and a note for the operator on what processing did.
ALTER TABLE billing_events
    ADD COLUMN provider_created_at TIMESTAMPTZ,
    ADD COLUMN subscription_ref    TEXT NOT NULL DEFAULT '',
    ADD COLUMN detail              TEXT NOT NULL DEFAULT '';
-- Every webhook is one insert into this table: it keeps only the indexes it needs. Partial
-- indexes cover what is looked up (pending events for the dispatcher, the sweeper and the
-- operator, failed ones for the operator) and cost nothing once an event is processed.
DROP INDEX billing_events_unprocessed;
CREATE INDEX billing_events_pending ON billing_events (id) WHERE processed_at IS NULL;
CREATE INDEX billing_events_failed ON billing_events (id) WHERE outcome = 'failed';

-- +goose Down
DROP INDEX billing_events_failed;
DROP INDEX billing_events_pending;
CREATE INDEX billing_events_unprocessed ON billing_events (processed_at, id);
ALTER TABLE billing_events DROP COLUMN detail, DROP COLUMN subscription_ref, DROP COLUMN provider_created_at;
DROP INDEX subscriptions_client;
CREATE INDEX subscriptions_client ON subscriptions (client_id);
UPDATE instances SET subscription_id = NULL
WHERE subscription_id IN (SELECT id FROM subscriptions WHERE client_id NOT IN (SELECT id FROM clients));
DELETE FROM subscriptions WHERE client_id NOT IN (SELECT id FROM clients);
ALTER TABLE subscriptions
    DROP CONSTRAINT subscriptions_status,
    DROP COLUMN fetched_at, DROP COLUMN canceled_at, DROP COLUMN status_since,
    DROP COLUMN client_locale, DROP COLUMN client_name, DROP COLUMN client_email,
    ALTER COLUMN client_id DROP DEFAULT,
    ADD CONSTRAINT subscriptions_client_id_fkey FOREIGN KEY (client_id) REFERENCES clients (id);
