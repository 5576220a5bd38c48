-- Whether the entry disclosed the notice (its decision on that notice was `permit`), so the
-- figures can count disclosures per category without reading every entry's JSON. Entries
-- written before this column are filled in from their `notices` JSON.
ALTER TABLE audit_notice_refs ADD COLUMN disclosed BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE audit_notice_refs r SET disclosed = TRUE
FROM audit_entries a, jsonb_array_elements(a.notices::jsonb) j
WHERE a.id = r.audit_id AND j->>'id' = r.notice_id AND j->>'decision' = 'permit';
CREATE INDEX audit_entries_action_at ON audit_entries (action, at);
