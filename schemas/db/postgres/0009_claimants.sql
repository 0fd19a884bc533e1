-- Who holds a delivery's or a push's claim: the gateway node (a host, or a
-- replica's slot) and the process on it. A process restarted on the same
-- node takes back its predecessor's claims at once instead of waiting for
-- their lease to run out; another live node's claims are left alone.
ALTER TABLE outbox ADD COLUMN claim_node TEXT;
ALTER TABLE outbox ADD COLUMN claim_instance TEXT;
ALTER TABLE inbox ADD COLUMN claim_node TEXT;
ALTER TABLE inbox ADD COLUMN claim_instance TEXT;
