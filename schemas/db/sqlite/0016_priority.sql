-- Priority and deadlines (issue 21 §1). A referral's priority, as the
-- inter-agency referral form marks it (delivery reads it from here into
-- the packet). The value lists are `Priority` and `DeadlineKind`
-- (src/domain/priority.rs); a test compares them.

ALTER TABLE referrals ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal'
    CONSTRAINT referrals_priority_known CHECK (priority IN ('emergency', 'urgent', 'normal'));
-- The deadline an overdue emergency was last logged for (once each).
ALTER TABLE referrals ADD COLUMN overdue_warned TEXT
    CONSTRAINT referrals_overdue_warned_known CHECK (overdue_warned IN ('delivery', 'acknowledgement', 'first_status'));
-- Referrals awaiting a deadline are counted by status, priority and age (metrics, warnings).
CREATE INDEX referrals_awaiting ON referrals (status, priority, created_ms);
-- An organisation lists its referrals in the order they were recorded
-- (GET /v1/referrals): `listed_seq`, numbered as each is stored, under the
-- lock every write takes (the audit chain's head), so that a page never
-- ends before a referral recorded later with an earlier number. Those
-- stored before are numbered in the order they were accepted.
ALTER TABLE referrals ADD COLUMN listed_seq BIGINT;
UPDATE referrals SET listed_seq = numbered.n
    FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY created_ms, id) AS n FROM referrals) AS numbered
    WHERE numbered.id = referrals.id;
CREATE UNIQUE INDEX referrals_by_listed_seq ON referrals (listed_seq);
CREATE INDEX referrals_by_sender ON referrals (sender_org, listed_seq);

-- The recipient's inbox, emergencies first, then by the deadline awaited of
-- the recipient (acknowledgement, then first answer), then what awaits
-- nothing of it. `priority` is NULL for a case sealed end to end: for the
-- organisation alone, and NULL once the case is erased. `answer_by_ms` is
-- the first-answer deadline, which `due_ms` takes on acknowledgement.
ALTER TABLE inbox ADD COLUMN priority TEXT
    CONSTRAINT inbox_priority_known CHECK (priority IN ('emergency', 'urgent', 'normal'));
ALTER TABLE inbox ADD COLUMN answer_by_ms BIGINT;
ALTER TABLE inbox ADD COLUMN queue_rank BIGINT;
ALTER TABLE inbox ADD COLUMN due_ms BIGINT;
-- Cases made visible before this migration have no deadlines: those not
-- acknowledged yet await their recipient, in the order they arrived (before
-- any new case but an emergency); the others are taken as awaiting nothing
-- (whether they were answered is not recorded here). Stop every replica
-- before this migration: one still running the earlier version would make
-- cases visible without a place in the queue (operations.md §3.3).
UPDATE inbox SET queue_rank = CASE WHEN state IN ('available', 'pushing') THEN 1 ELSE 2 END,
    due_ms = CASE WHEN state IN ('available', 'pushing') THEN received_ms ELSE 0 END
    WHERE visible_seq IS NOT NULL;
CREATE INDEX inbox_queue ON inbox (recipient_org, queue_rank, due_ms, visible_seq);
