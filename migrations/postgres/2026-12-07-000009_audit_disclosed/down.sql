DROP INDEX audit_entries_action_at;
ALTER TABLE audit_notice_refs DROP COLUMN disclosed;
