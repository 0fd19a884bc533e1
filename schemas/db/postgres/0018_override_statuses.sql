-- An emergency override awaiting a DPO's approval (issue 21 §4): the
-- referral status `awaiting_override`, and the timeline entries that settle
-- it (`override_approved`, `override_rejected`, `override_expired`), join
-- the value lists of ReferralStatus and ReferralEvent
-- (src/domain/lifecycle.rs); a test compares them.

ALTER TABLE referrals DROP CONSTRAINT referrals_status_known;
ALTER TABLE referrals ADD CONSTRAINT referrals_status_known CHECK (status IN (
        'queued', 'denied', 'awaiting_override', 'delivered', 'expired', 'forwarded', 'refused',
        'accepted', 'declined', 'in_progress', 'arrived', 'services_delivered', 'closed',
        'handover', 'withdrawn', 'erased_at_gateway', 'erasure_confirmed', 'retention_expired'));
ALTER TABLE referral_events DROP CONSTRAINT referral_events_status_known;
ALTER TABLE referral_events ADD CONSTRAINT referral_events_status_known CHECK (status IN (
        'queued', 'denied', 'awaiting_override', 'override_approved', 'override_rejected',
        'override_expired', 'delivered', 'expired', 'forwarded', 'refused', 'accepted', 'declined',
        'in_progress', 'arrived', 'services_delivered', 'closed', 'handover', 'withdrawn',
        'erased_at_gateway', 'erasure_confirmed', 'retention_expired', 'consent_narrowed',
        'consent_narrowed_before_sending', 'narrowed_at_gateway', 'narrowing_confirmed',
        'withdrawal_delivered', 'withdrawal_expired'));
