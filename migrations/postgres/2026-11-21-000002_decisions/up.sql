-- Consents and objections recorded by IG, one row per blind index of the subject's identifiers
-- (rows of one record share record_id). Evidence references are kept; reasons are sealed.
CREATE TABLE subject_directives (
    record_id TEXT NOT NULL,
    blind_index TEXT NOT NULL,
    kind TEXT NOT NULL,
    purpose TEXT NOT NULL,
    status TEXT NOT NULL,
    evidence_reference TEXT NOT NULL,
    reason BYTEA,
    effective_from DATE NOT NULL,
    expires_on DATE,
    recorded_at TIMESTAMP NOT NULL,
    recorded_by_org TEXT NOT NULL,
    recorded_by_user TEXT NOT NULL,
    PRIMARY KEY (record_id, blind_index)
);
CREATE INDEX subject_directives_lookup ON subject_directives (blind_index, kind, purpose);

-- Every decision on a read, permits and refusals alike, committed before the response.
CREATE TABLE audit_entries (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    at TIMESTAMP NOT NULL,
    request_id TEXT NOT NULL,
    action TEXT NOT NULL,
    actor_org TEXT NOT NULL,
    actor_org_type TEXT NOT NULL,
    actor_system TEXT NOT NULL,
    actor_user TEXT,
    actor_role TEXT,
    purpose TEXT,
    context_ref TEXT,
    break_glass BOOLEAN NOT NULL,
    justification BYTEA,
    subject_refs TEXT NOT NULL,
    decision TEXT NOT NULL,
    notices TEXT NOT NULL,
    lawful_basis TEXT NOT NULL,
    clauses TEXT NOT NULL,
    agreement_version TEXT NOT NULL,
    outcome INTEGER NOT NULL,
    ig_review TEXT
);
CREATE INDEX audit_entries_at ON audit_entries (at);
CREATE INDEX audit_entries_review ON audit_entries (ig_review);
