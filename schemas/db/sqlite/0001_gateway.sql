-- Referrals as decided: no personal data in clear. The subject reference and
-- the request body appear only as keyed hashes; the minimised payload only
-- sealed (AES-256-GCM) in the outbox.
CREATE TABLE referrals (
    id TEXT PRIMARY KEY,
    sender_org TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_fingerprint TEXT NOT NULL,
    subject_key TEXT NOT NULL,
    destination_org TEXT NOT NULL,
    destination_country TEXT,
    purpose TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('allow', 'deny')),
    policy_version TEXT NOT NULL,
    decision TEXT NOT NULL,
    consent TEXT NOT NULL,
    response TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (sender_org, idempotency_key)
);
CREATE INDEX referrals_by_subject ON referrals (subject_key, created_ms);

CREATE TABLE referral_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    referral_id TEXT NOT NULL REFERENCES referrals (id),
    status TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX referral_events_by_referral ON referral_events (referral_id, id);

CREATE TABLE outbox (
    referral_id TEXT PRIMARY KEY REFERENCES referrals (id),
    destination_country TEXT NOT NULL,
    sealed BLOB NOT NULL,
    key_id TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);

CREATE TABLE policy_versions (
    number INTEGER PRIMARY KEY,
    version TEXT NOT NULL,
    author_org TEXT,
    author_subject TEXT NOT NULL,
    note TEXT,
    created_ms BIGINT NOT NULL,
    files TEXT NOT NULL
);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor_org TEXT,
    actor_subject TEXT NOT NULL,
    action TEXT NOT NULL,
    referral_id TEXT,
    subject_key TEXT,
    policy_version TEXT,
    outcome TEXT NOT NULL,
    reasons TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit_log (at_ms);
CREATE INDEX audit_by_referral ON audit_log (referral_id);
CREATE INDEX audit_by_subject ON audit_log (subject_key);

-- The chain head: one row, updated with every appended batch.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only: the gateway never updates or deletes audit entries. (Someone
-- with direct database access can drop these triggers; `audit verify` then
-- still finds the edit.)
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
