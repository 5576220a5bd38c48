-- Whether the entry disclosed the notice (its decision on that notice was `permit`), so the
-- figures can count disclosures per category without reading every entry's JSON. Entries
-- written before this column are filled in from their `notices` JSON.
ALTER TABLE audit_notice_refs ADD COLUMN disclosed BOOLEAN NOT NULL DEFAULT 0;
UPDATE audit_notice_refs SET disclosed = 1 WHERE EXISTS (
    SELECT 1 FROM audit_entries a, json_each(a.notices) j
    WHERE a.id = audit_notice_refs.audit_id
      AND json_extract(j.value, '$.id') = audit_notice_refs.notice_id
      AND json_extract(j.value, '$.decision') = 'permit'
);
CREATE INDEX audit_entries_action_at ON audit_entries (action, at);
