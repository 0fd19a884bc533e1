-- An emergency override awaiting a DPO's approval (issue 21 §4): the
-- referral status `awaiting_override`, and the timeline entries that settle
-- it (`override_approved`, `override_rejected`, `override_expired`), join
-- the value lists of ReferralStatus and ReferralEvent
-- (src/domain/lifecycle.rs); a test compares them.
--
-- SQLite cannot replace a constraint: both tables are rebuilt as in
-- 0010_lifecycle_checks.sql (new table, rows copied, old dropped, new
-- renamed, indexes made again), with foreign keys off; referral_events
-- keeps its ids, and so its order.

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
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    handover BOOLEAN NOT NULL DEFAULT FALSE,
    retention_until_ms BIGINT,
    retention_days_after_closure BIGINT,
    erased_ms BIGINT,
    policy_number BIGINT NOT NULL DEFAULT 0,
    priority TEXT NOT NULL DEFAULT 'normal'
        CONSTRAINT referrals_priority_known CHECK (priority IN ('emergency', 'urgent', 'normal')),
    overdue_warned TEXT
        CONSTRAINT referrals_overdue_warned_known CHECK (overdue_warned IN ('delivery', 'acknowledgement', 'first_status')),
    listed_seq BIGINT,
    UNIQUE (sender_org, idempotency_key),
    CONSTRAINT referrals_status_known CHECK (status IN (
        'queued', 'denied', 'awaiting_override', 'delivered', 'expired', 'forwarded', 'refused',
        'accepted', 'declined', 'in_progress', 'arrived', 'services_delivered', 'closed',
        'handover', 'withdrawn', 'erased_at_gateway', 'erasure_confirmed', 'retention_expired'))
);
INSERT INTO referrals_new (id, sender_org, idempotency_key, request_fingerprint, subject_key, destination_org, destination_country,
       purpose, outcome, policy_version, decision, consent, status, created_ms, handover, retention_until_ms,
       retention_days_after_closure, erased_ms, policy_number, priority, overdue_warned, listed_seq)
SELECT id, sender_org, idempotency_key, request_fingerprint, subject_key, destination_org, destination_country,
       purpose, outcome, policy_version, decision, consent, status, created_ms, handover, retention_until_ms,
       retention_days_after_closure, erased_ms, policy_number, priority, overdue_warned, listed_seq
FROM referrals;
DROP TABLE referrals;
ALTER TABLE referrals_new RENAME TO referrals;
CREATE INDEX referrals_by_subject ON referrals (subject_key, created_ms);
CREATE INDEX referrals_by_retention ON referrals (retention_until_ms) WHERE erased_ms IS NULL;
CREATE INDEX referrals_by_acceptance ON referrals (created_ms, id);
CREATE INDEX referrals_awaiting ON referrals (status, priority, created_ms);
CREATE UNIQUE INDEX referrals_by_listed_seq ON referrals (listed_seq);
CREATE INDEX referrals_by_sender ON referrals (sender_org, listed_seq);

CREATE TABLE referral_events_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    referral_id TEXT NOT NULL REFERENCES referrals (id),
    status TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    reasons TEXT,
    CONSTRAINT referral_events_status_known CHECK (status IN (
        'queued', 'denied', 'awaiting_override', 'override_approved', 'override_rejected',
        'override_expired', 'delivered', 'expired', 'forwarded', 'refused', 'accepted', 'declined',
        'in_progress', 'arrived', 'services_delivered', 'closed', 'handover', 'withdrawn',
        'erased_at_gateway', 'erasure_confirmed', 'retention_expired', 'consent_narrowed',
        'consent_narrowed_before_sending', 'narrowed_at_gateway', 'narrowing_confirmed',
        'withdrawal_delivered', 'withdrawal_expired'))
);
INSERT INTO referral_events_new (id, referral_id, status, at_ms, reasons) SELECT id, referral_id, status, at_ms, reasons FROM referral_events;
DROP TABLE referral_events;
ALTER TABLE referral_events_new RENAME TO referral_events;
CREATE INDEX referral_events_by_referral ON referral_events (referral_id, id);
CREATE INDEX referral_events_by_time ON referral_events (at_ms);
