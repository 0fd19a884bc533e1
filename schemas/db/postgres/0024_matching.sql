-- Matching without disclosure (issue 22 §2). A gateway answers another's
-- match query with an index of the tracing requests sent from here that
-- the asking organisation may be matched against; nothing of a name is
-- stored or sent, only outputs of the gateway's match function.
--
-- `match_entries`: one row per family-tracing referral sent from here
-- whose subject has a name: the outputs of its match keys and the case
-- facts the built-in rules read (`sealed`), and apart from them the names,
-- birth years and sexes its own queries are made of (`people`), both
-- sealed under the case's key (whatever erases the case erases them). The
-- payload sent is blanked once delivered; `people` is what stays of the
-- search for as long as it is matched.
-- `match_handles`: every handle an answer gave, so that the asker's later
-- "found" names a case here without either side showing the other
-- anything more; `referral_id` is NULL for an entry the asker could not
-- see (or padding): one row per entry either way, so that what is written
-- does not depend on what is shown. Kept until expiry.
-- `match_queries`: when each member gateway asked, for its rate limit.
-- A match found records `match_found` on the referral's timeline, which
-- joins the value list of ReferralEvent (src/domain/lifecycle.rs); a test
-- compares them.

CREATE TABLE match_entries (
    referral_id TEXT PRIMARY KEY REFERENCES referrals (id),
    sealed BYTEA NOT NULL,
    people BYTEA NOT NULL,
    key_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE match_handles (
    handle TEXT PRIMARY KEY,
    referral_id TEXT REFERENCES referrals (id),
    asking_gateway TEXT NOT NULL,
    asking_org TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX match_handles_by_expiry ON match_handles (expires_ms);

CREATE TABLE match_queries (
    id BIGSERIAL PRIMARY KEY,
    asking_gateway TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX match_queries_by_gateway ON match_queries (asking_gateway, at_ms);

ALTER TABLE referral_events DROP CONSTRAINT referral_events_status_known;
ALTER TABLE referral_events ADD CONSTRAINT referral_events_status_known CHECK (status IN (
        'queued', 'denied', 'awaiting_override', 'override_approved', 'override_rejected',
        'override_expired', 'delivered', 'expired', 'forwarded', 'refused', 'accepted', 'declined',
        'in_progress', 'arrived', 'services_delivered', 'closed', 'handover', 'withdrawn',
        'erased_at_gateway', 'erasure_confirmed', 'retention_expired', 'consent_narrowed',
        'consent_narrowed_before_sending', 'narrowed_at_gateway', 'narrowing_confirmed',
        'withdrawal_delivered', 'withdrawal_expired', 'onward', 'reply_received', 'match_found'));
