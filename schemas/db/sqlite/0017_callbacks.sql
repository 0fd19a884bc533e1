-- Status callbacks (issue 21 §2): every timeline entry of a referral whose
-- organisation registered a callback (`[callbacks.<name>]`) is queued here
-- in the transaction that records it, so that none is lost, and pushed to
-- the organisation's URL as a signed event. The value list of `state` is
-- `CallbackState` (src/domain/lifecycle.rs); a test compares them.

-- The organisations with a callback, as the configuration of the replica
-- that started last registered them, and how long each event is retried.
CREATE TABLE callback_subscriptions (
    org TEXT PRIMARY KEY,
    retry_ms BIGINT NOT NULL
);

-- One row per event not delivered yet: `pending` until the organisation
-- answers 2xx (then the row goes), `failed` once its deadline passed.
-- `id` is the event's id (`<referral id>.<position>`), the same at every
-- attempt, so a receiver that sees it twice knows it already has it;
-- `position` is the entry's place in the referral's timeline (from 1).
-- The entry itself is copied: codes and times only, no personal data.
CREATE TABLE callbacks (
    id TEXT PRIMARY KEY,
    referral_id TEXT NOT NULL REFERENCES referrals (id),
    org TEXT NOT NULL,
    position BIGINT NOT NULL,
    event TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    reasons TEXT,
    state TEXT NOT NULL
        CONSTRAINT callbacks_state_known CHECK (state IN ('pending', 'failed')),
    next_ms BIGINT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    claim_node TEXT,
    claim_instance TEXT
);
CREATE INDEX callbacks_due ON callbacks (next_ms) WHERE state = 'pending';
-- A referral's events go one at a time, in timeline order.
CREATE UNIQUE INDEX callbacks_by_referral ON callbacks (referral_id, position);
CREATE INDEX callbacks_by_org ON callbacks (org, state);
