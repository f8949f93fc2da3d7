-- +goose Up
CREATE TABLE clients (
    id         TEXT PRIMARY KEY,
    email      TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL DEFAULT '',
    locale     TEXT NOT NULL DEFAULT 'en',
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE subscriptions (
    id                       TEXT PRIMARY KEY,
    client_id                TEXT NOT NULL REFERENCES clients (id),
    provider                 TEXT NOT NULL,
    provider_customer_id     TEXT NOT NULL DEFAULT '',
    provider_subscription_id TEXT NOT NULL,
    plan_id                  TEXT NOT NULL,
    status                   TEXT NOT NULL,
    current_period_end       TIMESTAMPTZ,
    provider_updated_at      TIMESTAMPTZ NOT NULL,
    created_at               TIMESTAMPTZ NOT NULL,
    updated_at               TIMESTAMPTZ NOT NULL,
    UNIQUE (provider, provider_subscription_id)
);
CREATE INDEX subscriptions_client ON subscriptions (client_id);

CREATE TABLE hosts (
    name          TEXT PRIMARY KEY,
    node          TEXT NOT NULL,
    vmid          INTEGER NOT NULL,
    public_ip     TEXT NOT NULL,
    ingress_url   TEXT NOT NULL,
    max_instances INTEGER NOT NULL CHECK (max_instances >= 0),
    state         TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining', 'disabled')),
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (node, vmid)
);

CREATE TABLE instances (
    id                    TEXT PRIMARY KEY,
    client_id             TEXT NOT NULL REFERENCES clients (id),
    subscription_id       TEXT REFERENCES subscriptions (id),
    slug                  TEXT NOT NULL UNIQUE,
    url                   TEXT NOT NULL,
    host                  TEXT REFERENCES hosts (name),
    plan_id               TEXT NOT NULL,
    cpus                  DOUBLE PRECISION NOT NULL,
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
    delete_after          TIMESTAMPTZ,
    emailed_at            TIMESTAMPTZ,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);
-- The portal's list and the operator's filters are keyset-paginated on id (UUIDv7, so
-- creation order); each index ends in id so a page is one index range scan.
CREATE INDEX instances_client ON instances (client_id, id);
CREATE INDEX instances_status ON instances (status, id);
CREATE INDEX instances_host ON instances (host, id);
CREATE INDEX instances_subscription ON instances (subscription_id);

CREATE TABLE instance_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES instances (id),
    at          TIMESTAMPTZ NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX instance_events_instance ON instance_events (instance_id, id);

CREATE TABLE billing_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    type         TEXT NOT NULL,
    payload      JSONB NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    enqueued_at  TIMESTAMPTZ,
    processed_at TIMESTAMPTZ,
    outcome      TEXT NOT NULL DEFAULT '',
    error        TEXT NOT NULL DEFAULT '',
    attempts     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (provider, event_id)
);
CREATE INDEX billing_events_unprocessed ON billing_events (processed_at, id);

-- +goose Down
DROP TABLE billing_events;
DROP TABLE instance_events;
DROP TABLE instances;
DROP TABLE hosts;
DROP TABLE subscriptions;
DROP TABLE clients;
