ALTER TABLE audit_entries DROP COLUMN pruned_at;
DROP INDEX audit_notice_refs_audit;
DROP INDEX audit_entries_break_glass;
DROP INDEX audit_entries_purpose;
DROP INDEX audit_entries_org;
DROP TABLE audit_subject_refs;
