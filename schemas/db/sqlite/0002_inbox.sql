-- Packets received from peer gateways. The claims are kept only sealed
-- (AES-256-GCM under data.key, bound to the packet id) until forwarded.
-- One row per packet id: a redelivery of the same bytes finds its row and
-- gets the stored receipt again; other bytes under a known id are a replay.
CREATE TABLE inbox (
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
    -- The packet id is remembered at least until the packet expires.
    expires_ms BIGINT NOT NULL
);
CREATE INDEX inbox_by_recipient ON inbox (recipient_org, received_ms);
CREATE INDEX inbox_by_expiry ON inbox (expires_ms);
