-- Billing owns subscriptions and billing_events. A subscription is stored when the
-- provider's event arrives, which can be before instances has created the client row
-- (or before any event has said whose the subscription is), so subscriptions.client_id
-- loses its foreign key and may be empty. SQLite cannot drop a constraint: the table is
-- rebuilt (https://www.sqlite.org/lang_altertable.html#otheralter), with foreign keys off
-- so that instances.subscription_id keeps pointing at the renamed table. goose runs a
-- NO TRANSACTION migration on one connection, so the pragmas apply to it.

-- +goose NO TRANSACTION
-- +goose Up
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE subscriptions_new (
    id                       TEXT PRIMARY KEY,
    client_id                TEXT NOT NULL DEFAULT '',
    client_email             TEXT NOT NULL DEFAULT '',
    client_name              TEXT NOT NULL DEFAULT '',
    client_locale            TEXT NOT NULL DEFAULT '',
    provider                 TEXT NOT NULL,
    provider_customer_id     TEXT NOT NULL DEFAULT '',
    provider_subscription_id TEXT NOT NULL,
    plan_id                  TEXT NOT NULL,
    status                   TEXT NOT NULL CHECK (status IN ('active', 'trialing', 'past_due', 'unpaid', 'canceled', 'incomplete', 'incomplete_expired')),
    status_since             DATETIME NOT NULL,
    current_period_end       DATETIME,
    canceled_at              DATETIME,
    provider_updated_at      DATETIME NOT NULL,
    fetched_at               DATETIME NOT NULL,
    created_at               DATETIME NOT NULL,
    updated_at               DATETIME NOT NULL,
    UNIQUE (provider, provider_subscription_id)
);
INSERT INTO subscriptions_new (id, client_id, provider, provider_customer_id, provider_subscription_id, plan_id,
    status, status_since, current_period_end, provider_updated_at, fetched_at, created_at, updated_at)
SELECT id, client_id, provider, provider_customer_id, provider_subscription_id, plan_id,
    status, updated_at, current_period_end, provider_updated_at, provider_updated_at, created_at, updated_at
FROM subscriptions;
DROP TABLE subscriptions;
ALTER TABLE subscriptions_new RENAME TO subscriptions;
CREATE INDEX subscriptions_client ON subscriptions (client_id, updated_at);

-- The provider's own event time (Stripe's `created`), the provider subscription the event
-- is about, and a note for the operator on what processing did.
ALTER TABLE billing_events ADD COLUMN provider_created_at DATETIME;
ALTER TABLE billing_events ADD COLUMN subscription_ref TEXT NOT NULL DEFAULT '';
ALTER TABLE billing_events ADD COLUMN detail TEXT NOT NULL DEFAULT '';
-- Every webhook is one insert into this table: it keeps only the indexes it needs. Partial
-- indexes cover what is looked up (pending events for the dispatcher, the sweeper and the
-- operator, failed ones for the operator) and cost nothing once an event is processed.
DROP INDEX billing_events_unprocessed;
CREATE INDEX billing_events_pending ON billing_events (id) WHERE processed_at IS NULL;
CREATE INDEX billing_events_failed ON billing_events (id) WHERE outcome = 'failed';
COMMIT;
PRAGMA foreign_keys = ON;

-- +goose Down
PRAGMA foreign_keys = OFF;
BEGIN;
DROP INDEX billing_events_failed;
DROP INDEX billing_events_pending;
CREATE INDEX billing_events_unprocessed ON billing_events (processed_at, id);
ALTER TABLE billing_events DROP COLUMN detail;
ALTER TABLE billing_events DROP COLUMN subscription_ref;
ALTER TABLE billing_events DROP COLUMN provider_created_at;
CREATE TABLE subscriptions_old (
    id                       TEXT PRIMARY KEY,
    client_id                TEXT NOT NULL REFERENCES clients (id),
    provider                 TEXT NOT NULL,
    provider_customer_id     TEXT NOT NULL DEFAULT '',
    provider_subscription_id TEXT NOT NULL,
    plan_id                  TEXT NOT NULL,
    status                   TEXT NOT NULL,
    current_period_end       DATETIME,
    provider_updated_at      DATETIME NOT NULL,
    created_at               DATETIME NOT NULL,
    updated_at               DATETIME NOT NULL,
    UNIQUE (provider, provider_subscription_id)
);
UPDATE instances SET subscription_id = NULL
WHERE subscription_id IN (SELECT id FROM subscriptions WHERE client_id NOT IN (SELECT id FROM clients));
INSERT INTO subscriptions_old (id, client_id, provider, provider_customer_id, provider_subscription_id, plan_id,
    status, current_period_end, provider_updated_at, created_at, updated_at)
SELECT id, client_id, provider, provider_customer_id, provider_subscription_id, plan_id,
    status, current_period_end, provider_updated_at, created_at, updated_at
FROM subscriptions WHERE client_id IN (SELECT id FROM clients);
DROP TABLE subscriptions;
ALTER TABLE subscriptions_old RENAME TO subscriptions;
CREATE INDEX subscriptions_client ON subscriptions (client_id);
COMMIT;
PRAGMA foreign_keys = ON;
