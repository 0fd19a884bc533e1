-- A submission's answer is rendered from its recorded decision (issue 18),
-- no longer stored as JSON: only the number of the policy version that
-- decided, which the stored answer held, is kept in a column of its own.
-- (SQLite adds a NOT NULL column only with a default; every row gets its
-- number below, and every insert names it.)

ALTER TABLE referrals ADD COLUMN policy_number BIGINT NOT NULL DEFAULT 0;
UPDATE referrals SET policy_number = json_extract(response, '$.policy_number');
ALTER TABLE referrals DROP COLUMN response;
