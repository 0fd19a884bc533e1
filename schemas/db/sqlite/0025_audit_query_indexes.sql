-- The audit query (`GET /v1/audit`, api.md §7.1) answers in chain order,
-- `ORDER BY seq LIMIT n`. With an index on the filtered column alone,
-- PostgreSQL walks the chain in `seq` order and filters, so a subject's
-- few entries among two million took 745 ms, and a rare action's 404 ms
-- (issue 23 §3). An index on the column and `seq` hands them over in
-- chain order: 0.1 and 0.4 ms. They replace the single-column ones.
CREATE INDEX audit_by_subject_seq ON audit_log (subject_key, seq);
CREATE INDEX audit_by_referral_seq ON audit_log (referral_id, seq);
CREATE INDEX audit_by_action_seq ON audit_log (action, seq);
DROP INDEX audit_by_subject;
DROP INDEX audit_by_referral;
