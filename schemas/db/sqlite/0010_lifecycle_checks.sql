-- Lifecycle states as closed sets (issue 18): every state column takes only
-- the values of its enum in `src/domain/lifecycle.rs` (ReferralStatus,
-- ReferralEvent, OutboxState, InboxState). A test compares these lists with
-- the enums; a new state needs a new migration that replaces the constraint.
--
-- SQLite cannot add a constraint to a table: each table is rebuilt (new
-- table, rows copied, old dropped, new renamed, indexes made again). The
-- gateway runs its SQLite migrations with foreign keys off, as SQLite's
-- procedure for this requires, and checks them all afterwards.

CREATE TABLE referrals_new (
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
    handover BOOLEAN NOT NULL DEFAULT FALSE,
    retention_until_ms BIGINT,
    retention_days_after_closure BIGINT,
    erased_ms BIGINT,
    UNIQUE (sender_org, idempotency_key),
    CONSTRAINT referrals_status_known CHECK (status IN (
        'queued', 'denied', 'delivered', 'expired', 'forwarded', 'refused', 'accepted', 'declined',
        'in_progress', 'arrived', 'services_delivered', 'closed', 'handover', 'withdrawn',
        'erased_at_gateway', 'erasure_confirmed', 'retention_expired'))
);
INSERT INTO referrals_new (id, sender_org, idempotency_key, request_fingerprint, subject_key, destination_org, destination_country, purpose,
                           outcome, policy_version, decision, consent, response, status, created_ms, handover, retention_until_ms,
                           retention_days_after_closure, erased_ms)
SELECT id, sender_org, idempotency_key, request_fingerprint, subject_key, destination_org, destination_country, purpose,
       outcome, policy_version, decision, consent, response, status, created_ms, handover, retention_until_ms,
       retention_days_after_closure, erased_ms
FROM referrals;
DROP TABLE referrals;
ALTER TABLE referrals_new RENAME TO referrals;
CREATE INDEX referrals_by_subject ON referrals (subject_key, created_ms);
CREATE INDEX referrals_by_retention ON referrals (retention_until_ms) WHERE erased_ms IS NULL;

CREATE TABLE referral_events_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    referral_id TEXT NOT NULL REFERENCES referrals (id),
    status TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    reasons TEXT,
    CONSTRAINT referral_events_status_known CHECK (status IN (
        'queued', 'denied', 'delivered', 'expired', 'forwarded', 'refused', 'accepted', 'declined',
        'in_progress', 'arrived', 'services_delivered', 'closed', 'handover', 'withdrawn',
        'erased_at_gateway', 'erasure_confirmed', 'retention_expired', 'consent_narrowed',
        'consent_narrowed_before_sending', 'narrowed_at_gateway', 'narrowing_confirmed',
        'withdrawal_delivered', 'withdrawal_expired'))
);
INSERT INTO referral_events_new (id, referral_id, status, at_ms, reasons) SELECT id, referral_id, status, at_ms, reasons FROM referral_events;
DROP TABLE referral_events;
ALTER TABLE referral_events_new RENAME TO referral_events;
CREATE INDEX referral_events_by_referral ON referral_events (referral_id, id);

CREATE TABLE outbox_new (
    id TEXT PRIMARY KEY,
    referral_id TEXT REFERENCES referrals (id),
    packet_type TEXT NOT NULL,
    destination_country TEXT NOT NULL,
    recipient_org TEXT NOT NULL,
    purpose TEXT,
    policy_version TEXT,
    sealed BLOB NOT NULL,
    key_id TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    consent_expires_ms BIGINT,
    deadline_ms BIGINT NOT NULL,
    packet_id TEXT UNIQUE,
    packet TEXT,
    receipt TEXT,
    last_error TEXT,
    settled_ms BIGINT,
    handover BOOLEAN NOT NULL DEFAULT FALSE,
    in_reply_to TEXT,
    end_to_end BOOLEAN NOT NULL DEFAULT FALSE,
    claim_node TEXT,
    claim_instance TEXT,
    CONSTRAINT outbox_state_known CHECK (state IN (
        'pending', 'delivered', 'expired', 'withdrawn', 'erased'))
);
INSERT INTO outbox_new (id, referral_id, packet_type, destination_country, recipient_org, purpose, policy_version, sealed, key_id, state,
                        attempts, next_attempt_ms, created_ms, consent_expires_ms, deadline_ms, packet_id, packet, receipt, last_error,
                        settled_ms, handover, in_reply_to, end_to_end, claim_node, claim_instance)
SELECT id, referral_id, packet_type, destination_country, recipient_org, purpose, policy_version, sealed, key_id, state,
       attempts, next_attempt_ms, created_ms, consent_expires_ms, deadline_ms, packet_id, packet, receipt, last_error,
       settled_ms, handover, in_reply_to, end_to_end, claim_node, claim_instance
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);
CREATE INDEX outbox_by_referral ON outbox (referral_id);

CREATE TABLE inbox_new (
    packet_id TEXT PRIMARY KEY,
    issuer TEXT NOT NULL,
    packet_sha256 TEXT NOT NULL,
    packet_type TEXT NOT NULL,
    recipient_org TEXT NOT NULL,
    sealed BLOB NOT NULL,
    key_id TEXT NOT NULL,
    receipt TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'received',
    received_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    reasons TEXT,
    settled_ms BIGINT,
    push_attempts BIGINT NOT NULL DEFAULT 0,
    next_push_ms BIGINT,
    push_error TEXT,
    visible_seq BIGINT,
    narrowed TEXT,
    narrowing_confirmed_ms BIGINT,
    retention_until_ms BIGINT,
    retention_days_after_closure BIGINT,
    claim_node TEXT,
    claim_instance TEXT,
    CONSTRAINT inbox_state_known CHECK (state IN (
        'received', 'refused', 'available', 'pushing', 'acknowledged', 'undeliverable', 'applied',
        'erased', 'erasure_pushing', 'erasure_confirmed', 'narrowing_pushing'))
);
INSERT INTO inbox_new (packet_id, issuer, packet_sha256, packet_type, recipient_org, sealed, key_id, receipt, state, received_ms, expires_ms,
                       reasons, settled_ms, push_attempts, next_push_ms, push_error, visible_seq, narrowed, narrowing_confirmed_ms,
                       retention_until_ms, retention_days_after_closure, claim_node, claim_instance)
SELECT packet_id, issuer, packet_sha256, packet_type, recipient_org, sealed, key_id, receipt, state, received_ms, expires_ms,
       reasons, settled_ms, push_attempts, next_push_ms, push_error, visible_seq, narrowed, narrowing_confirmed_ms,
       retention_until_ms, retention_days_after_closure, claim_node, claim_instance
FROM inbox;
DROP TABLE inbox;
ALTER TABLE inbox_new RENAME TO inbox;
CREATE INDEX inbox_by_recipient ON inbox (recipient_org, received_ms);
CREATE INDEX inbox_by_expiry ON inbox (expires_ms);
CREATE INDEX inbox_by_state ON inbox (state, received_ms);
CREATE INDEX inbox_by_digest ON inbox (packet_sha256);
CREATE UNIQUE INDEX inbox_by_visible_seq ON inbox (visible_seq);
CREATE INDEX inbox_by_retention ON inbox (retention_until_ms);
