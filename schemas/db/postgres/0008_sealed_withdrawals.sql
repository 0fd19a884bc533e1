-- A partial withdrawal of a case sealed end to end (issue 6). Its gateway
-- cannot read which categories it names: it keeps the withdrawal's own
-- envelope, sealed to the recipient organisation, beside the tombstone, and
-- hands it over with the case so that the organisation cuts them. Blanked
-- ('') when the case is erased.
ALTER TABLE narrowed_packets ADD COLUMN end_to_end TEXT;
