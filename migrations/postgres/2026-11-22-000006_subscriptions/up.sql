-- Subscriptions: a partner system's standing request to be told of changes to the notices that
-- match its criteria, for a purpose. Every delivery is decided by the agreement when it is made
-- and audited. A cohort is kept only as blind indexes of its members' identifiers.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    owner_ods TEXT NOT NULL,
    owner_system TEXT NOT NULL,
    status TEXT NOT NULL,
    purpose TEXT NOT NULL,
    role TEXT NOT NULL,
    context_ref TEXT,
    criteria TEXT NOT NULL,
    payload TEXT NOT NULL,
    channel TEXT NOT NULL,
    method TEXT NOT NULL,
    endpoint TEXT,
    encryption_jwk TEXT,
    tag TEXT,
    expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    approval TEXT NOT NULL,
    -- `notices`: changes to notices matching the criteria; `disclosures`: each disclosure of
    -- the owner's own notices (its access log, pushed).
    topic TEXT NOT NULL DEFAULT 'notices',
    -- FHIR rest-hook subscriptions: a heartbeat notification after this many idle seconds.
    heartbeat_seconds INTEGER,
    last_heartbeat_at TIMESTAMP,
    -- Delivery state: events are pushed strictly in order; `delivered_upto` is the last
    -- acknowledged. Written by the replica holding the lease.
    delivered_upto BIGINT NOT NULL DEFAULT 0,
    delivery_state TEXT NOT NULL DEFAULT 'active',
    attempts INTEGER NOT NULL DEFAULT 0,
    failing_since TIMESTAMP,
    next_attempt_at TIMESTAMP NOT NULL,
    last_attempt_at TIMESTAMP,
    last_delivered_at TIMESTAMP,
    last_error TEXT,
    lease_owner TEXT,
    lease_until TIMESTAMP
);
-- Delivery state is updated several times per event: leave room on each page for HOT updates.
ALTER TABLE subscriptions SET (fillfactor = 70);
CREATE INDEX subscriptions_owner ON subscriptions (owner_ods, created_at);
CREATE INDEX subscriptions_due ON subscriptions (method, delivery_state, next_attempt_at);

-- Events numbered so far, per subscription: written only by the fan-out (one replica at a time),
-- apart from the delivery state, so fan-out and delivery never wait on each other's row locks.
CREATE TABLE subscription_counters (
    subscription_id TEXT PRIMARY KEY NOT NULL REFERENCES subscriptions (id),
    last_event_number BIGINT NOT NULL
);

CREATE TABLE subscription_cohort (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    blind_index TEXT NOT NULL,
    PRIMARY KEY (subscription_id, blind_index)
);
CREATE INDEX subscription_cohort_blind ON subscription_cohort (blind_index);

-- The outbox: one row per change to a notice, written in the same transaction as the change.
CREATE TABLE notice_events (
    seq BIGSERIAL PRIMARY KEY,
    notice_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    kind TEXT NOT NULL,
    at TIMESTAMP NOT NULL,
    fanned_out_at TIMESTAMP
);
CREATE INDEX notice_events_pending ON notice_events (seq) WHERE fanned_out_at IS NULL;

-- Each event as numbered for one subscription.
CREATE TABLE subscription_events (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    event_number BIGINT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    notice_id TEXT NOT NULL,
    notice_version BIGINT NOT NULL,
    kind TEXT NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    matched BOOLEAN NOT NULL,
    -- For a `disclosed` event: the audit entry that records the disclosure.
    audit_id TEXT,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (subscription_id, event_number)
);
CREATE INDEX subscription_events_notice ON subscription_events (notice_id, subscription_id);

-- Which subscriptions have been given a notice (a permitted delivery or feed read, recorded in
-- the same transaction as its audit entry): they are told when it is withdrawn or expires.
CREATE TABLE subscription_notice_seen (
    subscription_id TEXT NOT NULL,
    notice_id TEXT NOT NULL,
    PRIMARY KEY (subscription_id, notice_id)
);

-- Events whose retries ran out; the subscription is suspended until redelivery is asked for.
CREATE TABLE subscription_dead_letters (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    event_number BIGINT NOT NULL,
    dead_at TIMESTAMP NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    resolved_at TIMESTAMP,
    PRIMARY KEY (subscription_id, event_number, dead_at)
);

-- How far the sealed audit log has been fanned out to `disclosures` subscriptions (a leaf index).
CREATE TABLE disclosure_fanout_state (
    id INTEGER PRIMARY KEY NOT NULL,
    after_leaf BIGINT NOT NULL
);
INSERT INTO disclosure_fanout_state (id, after_leaf) VALUES (1, -1);
