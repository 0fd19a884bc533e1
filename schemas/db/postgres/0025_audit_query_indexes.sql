-- The audit query (`GET /v1/audit`, api.md §7.1) answers in chain order,
-- `ORDER BY seq LIMIT n`. Measured on PostgreSQL with two million entries
-- (issue 23 §3, performance.md "Growth, a first look"): with an index on
-- `subject_key` alone the planner walked the chain in `seq` order and
-- filtered, so a subject's few entries took 745 ms; with no index on
-- `action` a rare action took a sequential scan, 404 ms. An index on the
-- filtered column and `seq` hands the entries over in chain order (0.1 and
-- 0.4 ms, the indexes made by hand). These replace `audit_by_subject` and
-- `audit_by_referral`, and add one on `action`.
CREATE INDEX audit_by_subject_seq ON audit_log (subject_key, seq);
CREATE INDEX audit_by_referral_seq ON audit_log (referral_id, seq);
CREATE INDEX audit_by_action_seq ON audit_log (action, seq);
DROP INDEX audit_by_subject;
DROP INDEX audit_by_referral;
