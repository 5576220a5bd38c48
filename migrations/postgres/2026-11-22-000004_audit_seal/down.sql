DROP TABLE audit_seal_state;
DROP TABLE audit_checkpoints;
DROP INDEX audit_entries_leaf;
ALTER TABLE audit_entries DROP COLUMN leaf_hash;
ALTER TABLE audit_entries DROP COLUMN leaf_index;
