-- What each decision read that no policy decides (issue 19 §2): kept so
-- that a new policy version can be replayed on recent traffic before it is
-- approved. Sealed under the case's key (`key_id`): an erased case leaves
-- nothing to replay. A denied referral has no payload; its facts get a key
-- of their own (`key_for_facts_only`), destroyed with the row once the
-- replay window (`[policy] impact_days`) has passed.

CREATE TABLE decision_facts (
    referral_id TEXT PRIMARY KEY REFERENCES referrals (id),
    decided_ms BIGINT NOT NULL,
    sealed BYTEA NOT NULL,
    key_id TEXT NOT NULL,
    key_for_facts_only BOOLEAN NOT NULL
);

CREATE INDEX decision_facts_by_time ON decision_facts (decided_ms, referral_id);
