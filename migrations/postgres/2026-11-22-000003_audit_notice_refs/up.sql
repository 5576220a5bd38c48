-- Which audit entries concern which notices, written with the entry, so a publisher's access
-- log is an index look-up rather than a scan of every entry.
CREATE TABLE audit_notice_refs (
    notice_id TEXT NOT NULL,
    audit_id TEXT NOT NULL,
    PRIMARY KEY (notice_id, audit_id)
);
