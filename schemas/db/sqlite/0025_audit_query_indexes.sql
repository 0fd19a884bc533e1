-- The audit query (`GET /v1/audit`, api.md §7.1) answers in chain order,
-- `ORDER BY seq LIMIT n`. The same indexes as PostgreSQL's migration 0025,
-- where they were measured (issue 23 §3): on the filtered column and `seq`,
-- so that a subject's, a referral's or an action's entries come in chain
-- order without a walk of the chain or a sort. SQLite's plans have not
-- been measured yet. These replace `audit_by_subject` and
-- `audit_by_referral`, and add one on `action`.
CREATE INDEX audit_by_subject_seq ON audit_log (subject_key, seq);
CREATE INDEX audit_by_referral_seq ON audit_log (referral_id, seq);
CREATE INDEX audit_by_action_seq ON audit_log (action, seq);
DROP INDEX audit_by_subject;
DROP INDEX audit_by_referral;
