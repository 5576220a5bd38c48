-- The IG review API: which audit entries concern which subjects (by the blind references the
-- entry records, never an identifier), so a subject search is an index look-up; indexes for the
-- review filters; and retention, which prunes an entry's content but keeps its seal.
CREATE TABLE audit_subject_refs (
    subject_ref TEXT NOT NULL,
    audit_id TEXT NOT NULL,
    PRIMARY KEY (subject_ref, audit_id)
);
INSERT INTO audit_subject_refs (subject_ref, audit_id)
    SELECT DISTINCT j.value, e.id FROM audit_entries e, jsonb_array_elements_text(e.subject_refs::jsonb) AS j(value);

CREATE INDEX audit_entries_org ON audit_entries (actor_org, seq);
CREATE INDEX audit_entries_purpose ON audit_entries (purpose, seq);
CREATE INDEX audit_entries_break_glass ON audit_entries (break_glass, seq);
CREATE INDEX audit_notice_refs_audit ON audit_notice_refs (audit_id);

-- Set when retention removed the entry's content; its leaf hash stays, so the tree still verifies.
ALTER TABLE audit_entries ADD COLUMN pruned_at TIMESTAMP;
