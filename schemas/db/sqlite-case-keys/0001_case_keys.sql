-- The case-key store, in a file of its own beside the gateway's database:
-- each case's data key, sealed under the key-encryption key (data.key) and
-- bound to its id. Destroying a row here is the erasure of everything
-- sealed under that key, wherever copies of it are. This file is never
-- backed up with the database (see docs/data-protection.md).
CREATE TABLE case_keys (
    id TEXT PRIMARY KEY,
    wrapped BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
