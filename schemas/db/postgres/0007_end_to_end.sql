-- End-to-end sealing (issue 6). `end_to_end` marks an outbox entry whose
-- packet must be sealed end to end to its recipient organisation's own key:
-- the sharing decision required it, or the organisation published a key
-- when the referral was accepted. A withdrawal takes its referral's mark.
-- Such an entry waits, and expires, rather than leave under the gateways'
-- envelope alone.
ALTER TABLE outbox ADD COLUMN end_to_end BOOLEAN NOT NULL DEFAULT FALSE;

