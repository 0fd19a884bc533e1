-- Emergency overrides (issue 21 §4). A referral allowed only under an
-- override is stored as any allowed one, its packet's entry in the outbox
-- `held` until a DPO other than the submitter approves it (then it is due
-- at once); rejected, or not approved within the window, the entry's
-- payload is erased and nothing is sent. Held in the outbox, the payload
-- is cut by a partial withdrawal, erased by a whole one or by the end of
-- its retention, as every other.
ALTER TABLE outbox ADD COLUMN held BOOLEAN NOT NULL DEFAULT FALSE;

-- What was asked and decided: codes, times and who, never personal data.
-- `overridden`: the categories the override stood in for consent for (a
-- JSON array). `requested_by` / `decided_by`: the submitter's and the
-- DPO's subjects (`standing_rule` when one approved it). The value list of
-- `state` is `OverrideState` (src/domain/emergency_override.rs); a test
-- compares them.
CREATE TABLE emergency_overrides (
    referral_id TEXT PRIMARY KEY REFERENCES referrals (id),
    reason TEXT NOT NULL
        CONSTRAINT emergency_overrides_reason_known CHECK (reason IN ('life_threatening', 'child_at_imminent_risk')),
    justification_code TEXT NOT NULL,
    overridden TEXT NOT NULL,
    requested_org TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_ms BIGINT NOT NULL,
    approve_by_ms BIGINT NOT NULL,
    state TEXT NOT NULL
        CONSTRAINT emergency_overrides_state_known CHECK (state IN ('awaiting_approval', 'approved', 'rejected', 'expired', 'stopped')),
    decided_by TEXT,
    decided_ms BIGINT
);
CREATE INDEX emergency_overrides_awaiting ON emergency_overrides (approve_by_ms) WHERE state = 'awaiting_approval';
