-- Consent withdrawal. A `withdrawal` packet in the outbox names the
-- referral packet whose data the peer must erase (`in_reply_to`, a packet id:
-- no personal data); its `referral_id` ties it to the referral's timeline.
-- A received referral whose sender withdrew is `erased` in the inbox.
ALTER TABLE outbox ADD COLUMN in_reply_to TEXT;
