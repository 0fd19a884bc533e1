-- A recipient tails its inbox in arrival order from a cursor (`GET
-- /v1/inbox?order=arrival&cursor=...`, api.md): `recipient_org = ? AND
-- state IN (...) AND visible_seq > ? ORDER BY visible_seq LIMIT n`.
-- SQLite, which keeps no statistics here, took `inbox_by_recipient` for
-- the equality on `recipient_org`, read every case of the organisation
-- after the cursor and sorted them: 153 ms a page (p50) with 100,000
-- cases stored (issue 23 §3, performance.md "Flat as data grows"). With
-- this index the page is a range of it, in order.
CREATE INDEX inbox_by_recipient_seq ON inbox (recipient_org, visible_seq);
