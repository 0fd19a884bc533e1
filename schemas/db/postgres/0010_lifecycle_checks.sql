-- Lifecycle states as closed sets (issue 18): every state column takes only
-- the values of its enum in `src/domain/lifecycle.rs` (ReferralStatus,
-- ReferralEvent, OutboxState, InboxState). A test compares these lists with
-- the enums; a new state needs a new migration that replaces the constraint.

ALTER TABLE referrals ADD CONSTRAINT referrals_status_known CHECK (status IN (
    'queued', 'denied', 'delivered', 'expired', 'forwarded', 'refused', 'accepted', 'declined',
    'in_progress', 'arrived', 'services_delivered', 'closed', 'handover', 'withdrawn',
    'erased_at_gateway', 'erasure_confirmed', 'retention_expired'));
ALTER TABLE referral_events ADD CONSTRAINT referral_events_status_known CHECK (status IN (
    'queued', 'denied', 'delivered', 'expired', 'forwarded', 'refused', 'accepted', 'declined',
    'in_progress', 'arrived', 'services_delivered', 'closed', 'handover', 'withdrawn',
    'erased_at_gateway', 'erasure_confirmed', 'retention_expired', 'consent_narrowed',
    'consent_narrowed_before_sending', 'narrowed_at_gateway', 'narrowing_confirmed',
    'withdrawal_delivered', 'withdrawal_expired'));
ALTER TABLE outbox ADD CONSTRAINT outbox_state_known CHECK (state IN (
    'pending', 'delivered', 'expired', 'withdrawn', 'erased'));
ALTER TABLE inbox ADD CONSTRAINT inbox_state_known CHECK (state IN (
    'received', 'refused', 'available', 'pushing', 'acknowledged', 'undeliverable', 'applied',
    'erased', 'erasure_pushing', 'erasure_confirmed', 'narrowing_pushing'));
