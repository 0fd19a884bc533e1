-- The case-key store, in a schema of its own (or a database of its own:
-- [database] case_keys_url): each case's data key, sealed under the
-- key-encryption key (data.key) and bound to its id. Destroying a row here
-- is the erasure of everything sealed under that key, wherever copies of it
-- are. It is never backed up with the data (see docs/data-protection.md).
CREATE TABLE case_keys (
    id TEXT PRIMARY KEY,
    wrapped BYTEA NOT NULL,
    created_ms BIGINT NOT NULL
);
