-- Federated reads: at the answering broker, the peer broker that relayed the request; at the
-- asking broker, each peer asked and what it answered (notice ids, views, clauses; never content).
-- JSON; NULL for every read that did not cross a border. Sealed with the entry when present.
ALTER TABLE audit_entries ADD COLUMN federation TEXT;
