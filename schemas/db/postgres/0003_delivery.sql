-- The outbox becomes the queue of every packet this gateway sends: a
-- referral's (id = the referral id), and the status packets it answers with
-- (id = the packet id). Rebuilt rather than altered, since SQLite cannot
-- change a primary key.
--
-- `sealed` is the packet body at rest (AES-256-GCM under data.key, bound to
-- `id`). `packet` is the sealed packet (compact JWE, readable only by the
-- peer) as first sent: every retry sends the same bytes under the same id,
-- so the peer answers a redelivery with its first receipt. It is made on the
-- first attempt and kept. A claim by a worker moves `next_attempt_ms` ahead
-- by a lease: a worker that dies mid-delivery leaves an entry that falls due
-- again by itself.
CREATE TABLE outbox_entries (
    id TEXT PRIMARY KEY,
    referral_id TEXT REFERENCES referrals (id),
    packet_type TEXT NOT NULL,
    destination_country TEXT NOT NULL,
    recipient_org TEXT NOT NULL,
    purpose TEXT,
    policy_version TEXT,
    sealed BYTEA NOT NULL,
    key_id TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    -- The earliest end of the consent that covers what a referral carries.
    consent_expires_ms BIGINT,
    -- After this the entry is `expired` and nothing more is sent.
    deadline_ms BIGINT NOT NULL,
    packet_id TEXT UNIQUE,
    packet TEXT,
    -- The peer's signed receipt: proof that it took this packet.
    receipt TEXT,
    -- Code of the last failed attempt (a `packet-*` problem code or a
    -- transport code); never a message from the peer.
    last_error TEXT,
    settled_ms BIGINT
);
INSERT INTO outbox_entries (id, referral_id, packet_type, destination_country, recipient_org, purpose, policy_version,
                            sealed, key_id, state, attempts, next_attempt_ms, created_ms, deadline_ms)
SELECT o.referral_id, o.referral_id, 'referral', o.destination_country, r.destination_org, r.purpose, r.policy_version,
       o.sealed, o.key_id, o.state, o.attempts, o.next_attempt_ms, o.created_ms, o.created_ms + 604800000
FROM outbox o JOIN referrals r ON r.id = o.referral_id;
DROP TABLE outbox;
ALTER TABLE outbox_entries RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);
CREATE INDEX outbox_by_referral ON outbox (referral_id);

-- What became of a received packet: `received`, then `refused` (with the
-- reason codes), `available` to its recipient (pull) or `pushing` (webhook),
-- `acknowledged` by it, `undeliverable` (the push never succeeded before
-- the packet expired), or `applied` (a status packet, to its referral).
ALTER TABLE inbox ADD COLUMN reasons TEXT;
ALTER TABLE inbox ADD COLUMN settled_ms BIGINT;
CREATE INDEX inbox_by_state ON inbox (state, received_ms);

-- Reason codes a status brought (a refusal's, say), shown in the timeline.
ALTER TABLE referral_events ADD COLUMN reasons TEXT;

-- Pushing a case to a recipient's webhook (`pushing` state): attempts, when
-- the next is due (moved ahead by a lease when claimed), the last failure's code.
ALTER TABLE inbox ADD COLUMN push_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE inbox ADD COLUMN next_push_ms BIGINT;
ALTER TABLE inbox ADD COLUMN push_error TEXT;

-- A handover: case management passes to the recipient when it accepts.
ALTER TABLE referrals ADD COLUMN handover BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE outbox ADD COLUMN handover BOOLEAN NOT NULL DEFAULT FALSE;

-- The rebuilt table's constraints under the names a table called `outbox` gets.
ALTER TABLE outbox RENAME CONSTRAINT outbox_entries_pkey TO outbox_pkey;
ALTER TABLE outbox RENAME CONSTRAINT outbox_entries_packet_id_key TO outbox_packet_id_key;
ALTER TABLE outbox RENAME CONSTRAINT outbox_entries_referral_id_fkey TO outbox_referral_id_fkey;

-- A redelivery is recognised by its bytes before it is opened: it gets its
-- first receipt even once the key it was sealed to has retired.
CREATE INDEX inbox_by_digest ON inbox (packet_sha256);

-- The order in which cases became visible to their recipients, numbered in
-- commit order (write batches take the audit head first, so they commit one
-- after another, across replicas too): the recipients' cursor. Arrival time
-- would not do: a case that arrived earlier may be screened later, behind a
-- cursor already past it.
ALTER TABLE inbox ADD COLUMN visible_seq BIGINT;
CREATE UNIQUE INDEX inbox_by_visible_seq ON inbox (visible_seq);
