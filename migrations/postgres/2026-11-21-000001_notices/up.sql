-- Notices: one row per notice holding its current state; the content lives, encrypted, in
-- notice_versions. Plain columns hold only what filtering needs and reveal no identifier.
CREATE TABLE notices (
    id TEXT PRIMARY KEY NOT NULL,
    publisher_ods TEXT NOT NULL,
    status TEXT NOT NULL,
    current_version BIGINT NOT NULL,
    category TEXT NOT NULL,
    risk_level TEXT NOT NULL,
    medical_factor_operative BOOLEAN NOT NULL,
    review_date DATE NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX notices_status_review ON notices (status, review_date);
CREATE INDEX notices_publisher ON notices (publisher_ods);

CREATE TABLE notice_versions (
    notice_id TEXT NOT NULL REFERENCES notices (id),
    version BIGINT NOT NULL,
    change_kind TEXT NOT NULL,
    status TEXT NOT NULL,
    content BYTEA NOT NULL,
    reason BYTEA,
    by_system TEXT,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (notice_id, version)
);

-- Keyed blind indexes (HMAC) of each normalised subject identifier of the current version.
CREATE TABLE notice_match_keys (
    blind_index TEXT NOT NULL,
    notice_id TEXT NOT NULL REFERENCES notices (id),
    kind TEXT NOT NULL,
    PRIMARY KEY (blind_index, notice_id)
);
CREATE INDEX notice_match_keys_notice ON notice_match_keys (notice_id);

CREATE TABLE idempotency_keys (
    org_ods TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    notice_id TEXT NOT NULL REFERENCES notices (id),
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (org_ods, idempotency_key)
);

-- Client assertion ids already used, kept until the assertion expires (RFC 7523 replay check).
CREATE TABLE assertion_jtis (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX assertion_jtis_expiry ON assertion_jtis (expires_at);
