-- Onward referral (issue 21 §3): the limits the sending gateway's decision
-- puts on what the recipient may pass on, sealed under the case's own key
-- like the payload (they hold the person's refusals of organisations), and
-- blanked with it. NULL when nothing may be passed on, and for every
-- packet other than a referral.
ALTER TABLE outbox ADD COLUMN onward BYTEA;
