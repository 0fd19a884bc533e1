-- Partial consent withdrawal: some categories of a referral withdrawn, the
-- rest still shared. Category names only (JSON arrays): no personal data.

-- The sending side records a partial withdrawal in the referral's timeline
-- (`consent_narrowed`, the categories as its reasons).

-- Receiving side: the categories erased from a case its recipient still
-- holds (NULL: none), and when the organisation confirmed it erased them too
-- (NULL: not yet, or narrowed again since).
ALTER TABLE inbox ADD COLUMN narrowed TEXT;
ALTER TABLE inbox ADD COLUMN narrowing_confirmed_ms BIGINT;

-- Partial withdrawals of referral packets, kept even when the withdrawal
-- came first: a referral packet arriving later is cut down before anyone
-- sees it. One row per withdrawal packet.
CREATE TABLE narrowed_packets (
    withdrawal_id TEXT PRIMARY KEY,
    packet_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    categories TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX narrowed_packets_by_packet ON narrowed_packets (packet_id, issuer);
