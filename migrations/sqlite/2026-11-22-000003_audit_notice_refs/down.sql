DROP TABLE audit_notice_refs;
