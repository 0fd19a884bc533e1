-- Retention deadlines (issue 5): dates and day counts, no personal data.
--
-- A referral sent from here keeps its deadline (unix milliseconds) and the
-- closure rule it was accepted under; a `closed` status brings the deadline
-- forward, never back. `erased_ms` is set when the retention sweep erased
-- it (case key destroyed, payload and kept packet blanked), so that the
-- sweep takes each referral once.
ALTER TABLE referrals ADD COLUMN retention_until_ms BIGINT;
ALTER TABLE referrals ADD COLUMN retention_days_after_closure BIGINT;
ALTER TABLE referrals ADD COLUMN erased_ms BIGINT;
CREATE INDEX referrals_by_retention ON referrals (retention_until_ms) WHERE erased_ms IS NULL;

-- A received referral made available keeps the deadline it came with (or
-- this gateway's own, if shorter); the sweep moves a live case past it to
-- `erased`.
ALTER TABLE inbox ADD COLUMN retention_until_ms BIGINT;
ALTER TABLE inbox ADD COLUMN retention_days_after_closure BIGINT;
CREATE INDEX inbox_by_retention ON inbox (retention_until_ms);
