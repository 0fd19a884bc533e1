-- Onward referral at the receiving gateway (issue 21 §3). A case its
-- recipient passes on within the country is a copy in the inbox, listed to
-- (or pushed to) the onward organisation like any case, and linked to the
-- case it was passed on from: `onward_of` (that packet's id), `onward_number`
-- (1, 2, ... among its copies: the sender's timeline names a copy by it),
-- `onward_kind` (the onward organisation's kind, which the sender is told
-- instead of its name) and `onward_referred_by` (the organisation that
-- passed it on). All NULL for a packet received from a peer. A withdrawal
-- or erasure of the case reaches its copies through `onward_of`.
--
-- The sender's timeline records onward movements as the entry `onward`,
-- which joins the value list of ReferralEvent (src/domain/lifecycle.rs); a
-- test compares them.

ALTER TABLE inbox ADD COLUMN onward_of TEXT;
ALTER TABLE inbox ADD COLUMN onward_number BIGINT;
ALTER TABLE inbox ADD COLUMN onward_kind TEXT;
ALTER TABLE inbox ADD COLUMN onward_referred_by TEXT;
-- The refusals of onward referrals of a case already told to its sender
-- (`told`: the onward kind and the code, `<kind>:<code>`): each is told
-- once, however often it is asked.
CREATE TABLE onward_refusals (
    packet_id TEXT NOT NULL,
    told TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (packet_id, told)
);
CREATE UNIQUE INDEX inbox_onward_copies ON inbox (onward_of, onward_number);

ALTER TABLE referral_events DROP CONSTRAINT referral_events_status_known;
ALTER TABLE referral_events ADD CONSTRAINT referral_events_status_known CHECK (status IN (
        'queued', 'denied', 'awaiting_override', 'override_approved', 'override_rejected',
        'override_expired', 'delivered', 'expired', 'forwarded', 'refused', 'accepted', 'declined',
        'in_progress', 'arrived', 'services_delivered', 'closed', 'handover', 'withdrawn',
        'erased_at_gateway', 'erasure_confirmed', 'retention_expired', 'consent_narrowed',
        'consent_narrowed_before_sending', 'narrowed_at_gateway', 'narrowing_confirmed',
        'withdrawal_delivered', 'withdrawal_expired', 'onward'));
