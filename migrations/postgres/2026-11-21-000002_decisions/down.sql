DROP TABLE audit_entries;
DROP TABLE subject_directives;
