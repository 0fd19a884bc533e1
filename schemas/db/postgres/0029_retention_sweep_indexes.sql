-- The retention sweep takes, round after round, the cases past their
-- deadline that are still there to erase:
--   referrals: `retention_until_ms <= ? AND erased_ms IS NULL AND status
--     NOT IN (the statuses of a whole withdrawal)`;
--   inbox: `state IN (the live states) AND retention_until_ms <= ?`;
-- both `ORDER BY` the deadline and the id. The indexes of migration 0006
-- also held what the sweep passes over: a referral withdrawn whole (erased
-- then, never marked by the sweep) and a received case already erased or
-- settled. With a backlog every round read those again from the start of
-- the range, more each round as the backlog was erased (issue 23 §3,
-- performance.md "Flat as data grows"). These hold only what the sweep
-- takes, in its order. Their conditions are the sweep's own, word for word
-- (the lists as `src/store/transitions.rs` writes them), so that SQLite
-- sees the query implies them; tests/api/store/schema.rs checks that both
-- backends use them.
--
-- Built first, the old ones dropped last: on PostgreSQL a drop locks its
-- table against reads too, until the commit, which then follows at once.
CREATE INDEX referrals_to_sweep ON referrals (retention_until_ms, id)
    WHERE erased_ms IS NULL AND status NOT IN ('withdrawn', 'erased_at_gateway', 'erasure_confirmed');
CREATE INDEX inbox_to_sweep ON inbox (retention_until_ms, packet_id)
    WHERE state IN ('available', 'acknowledged', 'pushing', 'narrowing_pushing');
DROP INDEX referrals_by_retention;
DROP INDEX inbox_by_retention;
