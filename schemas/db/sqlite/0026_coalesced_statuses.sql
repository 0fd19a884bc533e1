-- Coalesced status packets (protocol version 2, federation.md §5b). A
-- status queued for a peer that takes version 2 may be carried, with
-- others to the same peer, by one outbox entry of type `statuses`: the
-- carrier, sealed, sent, receipted, retried and expired as any entry.
-- `carried_by` names it on each status it carries; such a status is never
-- due on its own, and is settled with its carrier, in the same
-- transaction, with its receipt.
ALTER TABLE outbox ADD COLUMN carried_by TEXT;
CREATE INDEX outbox_by_carrier ON outbox (carried_by) WHERE carried_by IS NOT NULL;
