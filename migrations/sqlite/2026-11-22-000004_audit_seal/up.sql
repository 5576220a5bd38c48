-- Sealing: each entry gets its position in the RFC 9162 Merkle tree and its leaf hash, and the
-- broker signs checkpoints (tree size, root hash) as JWS. Entries are sealed in seq order as
-- they are found committed; the leaf index, not seq, is the order of the tree.
ALTER TABLE audit_entries ADD COLUMN leaf_index BIGINT;
ALTER TABLE audit_entries ADD COLUMN leaf_hash TEXT;
CREATE UNIQUE INDEX audit_entries_leaf ON audit_entries (leaf_index);

CREATE TABLE audit_checkpoints (
    tree_size BIGINT PRIMARY KEY NOT NULL,
    root_hash TEXT NOT NULL,
    signed_at TIMESTAMP NOT NULL,
    jws TEXT NOT NULL
);

-- The tree's right edge, so any replica can continue sealing where another stopped.
CREATE TABLE audit_seal_state (
    id INTEGER PRIMARY KEY NOT NULL,
    tree_size BIGINT NOT NULL,
    frontier TEXT NOT NULL
);
INSERT INTO audit_seal_state (id, tree_size, frontier) VALUES (1, 0, '[]');
