-- A submission's answer is rendered from its recorded decision (issue 18),
-- no longer stored as JSON: only the number of the policy version that
-- decided, which the stored answer held, is kept in a column of its own.

ALTER TABLE referrals ADD COLUMN policy_number BIGINT;
UPDATE referrals SET policy_number = (response::jsonb ->> 'policy_number')::bigint;
ALTER TABLE referrals ALTER COLUMN policy_number SET NOT NULL;
ALTER TABLE referrals DROP COLUMN response;
