-- Notices shown, counted per month, organisation shown them, category and purpose ('' when none
-- was asserted), kept up to date by the sealer in the transaction that seals the entries, so
-- the figures read a few rows rather than re-counting the log. Filled here from the entries
-- already sealed.
CREATE TABLE figure_counts (
    month TEXT NOT NULL,
    org TEXT NOT NULL,
    category TEXT NOT NULL,
    purpose TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (month, org, category, purpose)
);
INSERT INTO figure_counts (month, org, category, purpose, n)
SELECT substr(CAST(a.at AS TEXT), 1, 7), a.actor_org, nt.category, COALESCE(a.purpose, ''), COUNT(*)
FROM audit_entries a
JOIN audit_notice_refs r ON r.audit_id = a.id AND r.disclosed
JOIN notices nt ON nt.id = r.notice_id
WHERE a.leaf_index IS NOT NULL
  AND a.action IN ('lookup', 'relayed-lookup', 'read', 'fhir-search', 'fhir-read', 'feed', 'fhir-events', 'deliver')
GROUP BY substr(CAST(a.at AS TEXT), 1, 7), a.actor_org, nt.category, COALESCE(a.purpose, '');
