-- Replies that carry data (issue 22 §1): a recipient organisation answers
-- a tracing request or a family-assessment request with a reply case,
-- decided and sent from its gateway like any referral, and received at the
-- requesting gateway into the inbox of the organisation that asked.
--
-- At the replying gateway, `referrals.answers_packet` is the id of the
-- request's packet (in this gateway's inbox) that the referral answers;
-- NULL for a referral that answers nothing. Its outbox entry carries the
-- same id in `in_reply_to`, which goes into the packet as `answers`.
-- At the requesting gateway, `inbox.answers_referral` is the referral
-- (sent from here) a received reply answers; NULL for any other packet.
-- The requesting referral's timeline records it as `reply_received`, which
-- joins the value list of ReferralEvent (src/domain/lifecycle.rs); a test
-- compares them.

ALTER TABLE referrals ADD COLUMN answers_packet TEXT;
CREATE INDEX referrals_by_answered_packet ON referrals (answers_packet);
ALTER TABLE inbox ADD COLUMN answers_referral TEXT;
CREATE INDEX inbox_by_answered_referral ON inbox (answers_referral);

ALTER TABLE referral_events DROP CONSTRAINT referral_events_status_known;
ALTER TABLE referral_events ADD CONSTRAINT referral_events_status_known CHECK (status IN (
        'queued', 'denied', 'awaiting_override', 'override_approved', 'override_rejected',
        'override_expired', 'delivered', 'expired', 'forwarded', 'refused', 'accepted', 'declined',
        'in_progress', 'arrived', 'services_delivered', 'closed', 'handover', 'withdrawn',
        'erased_at_gateway', 'erasure_confirmed', 'retention_expired', 'consent_narrowed',
        'consent_narrowed_before_sending', 'narrowed_at_gateway', 'narrowing_confirmed',
        'withdrawal_delivered', 'withdrawal_expired', 'onward', 'reply_received'));
