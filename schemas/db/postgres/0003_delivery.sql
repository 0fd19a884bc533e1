-- Delivery of outbox entries to the peer gateway.
-- `packet` is the sealed packet (compact JWE, readable only by the peer) as
-- first sent: every retry sends the same bytes under the same id, so the
-- peer can answer a redelivery with its first receipt. It is made on the
-- first attempt and kept until delivered or expired.
-- A claim by a worker moves `next_attempt_ms` forward by a lease: a worker
-- that dies mid-delivery leaves an entry that falls due again by itself.
ALTER TABLE outbox ADD COLUMN packet_id TEXT;
ALTER TABLE outbox ADD COLUMN packet TEXT;
-- The peer's signed receipt: proof that it took this packet.
ALTER TABLE outbox ADD COLUMN receipt TEXT;
-- Code of the last failed attempt (a `packet-*` problem code or a transport
-- code); never a message from the peer.
ALTER TABLE outbox ADD COLUMN last_error TEXT;
-- The earliest end of the consent that covers what the packet carries.
ALTER TABLE outbox ADD COLUMN consent_expires_ms BIGINT;
-- After this the entry is `expired` and nothing more is sent.
ALTER TABLE outbox ADD COLUMN deadline_ms BIGINT;
ALTER TABLE outbox ADD COLUMN settled_ms BIGINT;
UPDATE outbox SET deadline_ms = created_ms + 604800000 WHERE deadline_ms IS NULL;
CREATE UNIQUE INDEX outbox_by_packet ON outbox (packet_id);
-- Read as a 64-bit integer on both backends.
ALTER TABLE outbox ALTER COLUMN attempts TYPE BIGINT;
