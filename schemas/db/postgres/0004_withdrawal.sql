-- Consent withdrawal. A `withdrawal` packet in the outbox names the
-- referral packet whose data the peer must erase (`in_reply_to`, a packet id:
-- no personal data); its `referral_id` ties it to the referral's timeline.
-- A received referral whose sender withdrew is `erased` in the inbox.
ALTER TABLE outbox ADD COLUMN in_reply_to TEXT;

-- Referral packets a sender withdrew, kept even when the withdrawal came
-- first: a referral packet arriving after its withdrawal is erased on arrival.
CREATE TABLE withdrawn_packets (
    packet_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (packet_id, issuer)
);
