-- Four-eyes sign-off of policy versions (issue 19): an upload is a draft
-- until enough distinct DPOs approve it; only approved versions act, from
-- their effective time. Versions stored before this migration took effect
-- when stored, so they are approved as of then.
-- The state column takes the values of `PolicyVersionState`
-- (src/domain/signoff.rs); a test compares the lists.

ALTER TABLE policy_versions ADD COLUMN state TEXT NOT NULL DEFAULT 'approved'
    CONSTRAINT policy_versions_state_known CHECK (state IN ('draft', 'approved', 'rejected'));
-- The earliest time the author asked it to take effect, if any.
ALTER TABLE policy_versions ADD COLUMN effective_from_ms BIGINT;
-- Set when approved: when it takes effect, and when its sign-off completed or it was rejected.
ALTER TABLE policy_versions ADD COLUMN effective_ms BIGINT;
ALTER TABLE policy_versions ADD COLUMN decided_ms BIGINT;
-- How many sign-offs it has: a review is stored only if no other came in between.
ALTER TABLE policy_versions ADD COLUMN reviews BIGINT NOT NULL DEFAULT 0;
-- The earlier version whose files it restores (a rollback), if any.
ALTER TABLE policy_versions ADD COLUMN restores BIGINT;
-- What was checked at upload (tests, proofs, label), as JSON.
ALTER TABLE policy_versions ADD COLUMN checks TEXT;
UPDATE policy_versions SET effective_ms = created_ms, decided_ms = created_ms;
-- From now on a version is a draft unless stored otherwise, and an approved
-- one always says when it acts: a binary from before this migration, still
-- running during an upgrade, cannot store a version that acts unsigned.
ALTER TABLE policy_versions ALTER COLUMN state SET DEFAULT 'draft';
ALTER TABLE policy_versions ADD CONSTRAINT policy_versions_approved_has_effect
    CHECK (state <> 'approved' OR effective_ms IS NOT NULL);

CREATE TABLE policy_signoffs (
    number BIGINT NOT NULL REFERENCES policy_versions (number),
    reviewer_org TEXT NOT NULL,
    reviewer_subject TEXT NOT NULL,
    verdict TEXT NOT NULL CONSTRAINT policy_signoffs_verdict_known CHECK (verdict IN ('approve', 'reject')),
    at_ms BIGINT NOT NULL,
    note TEXT,
    PRIMARY KEY (number, reviewer_org, reviewer_subject)
);

-- The other person of a four-eyes step: the author of the version signed off.
ALTER TABLE audit_log ADD COLUMN counterpart_org TEXT;
ALTER TABLE audit_log ADD COLUMN counterpart_subject TEXT;
