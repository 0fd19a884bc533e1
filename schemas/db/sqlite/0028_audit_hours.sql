-- The audit query for a time window (`GET /v1/audit?from=...&to=...`,
-- api.md §7.1) answers in chain order: `at_ms >= ? AND at_ms < ? ORDER
-- BY seq LIMIT n`. Without more, SQLite read every entry of the window
-- through `audit_by_time` and sorted them (21.6 ms p99 for a day at a
-- million referrals, about 35,000 entries), and PostgreSQL walked the
-- chain from its start, filtering on the time (180 ms p99 at 200,000;
-- issue 23 §3, performance.md "Flat as data grows").
--
-- An entry's time is the clock's when it was written, so times along the
-- chain may go back (a clock set back; two writes racing for the head).
-- This table keeps, for each hour (`at_ms / 3600000`), the first and last
-- `seq` of the entries timed in it, whatever their order: a window's
-- entries all lie between the first `seq` of its first hour and the last
-- of its last, and the query walks the chain there only. A trigger keeps
-- it, so that no way of appending can miss it; the log stays append-only,
-- so nothing ever narrows it.
CREATE TABLE audit_hours (
    hour INTEGER PRIMARY KEY,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL
);
INSERT INTO audit_hours (hour, first_seq, last_seq)
    SELECT at_ms / 3600000, MIN(seq), MAX(seq) FROM audit_log GROUP BY at_ms / 3600000;
CREATE TRIGGER audit_log_hours AFTER INSERT ON audit_log
BEGIN
    INSERT INTO audit_hours (hour, first_seq, last_seq) VALUES (NEW.at_ms / 3600000, NEW.seq, NEW.seq)
    ON CONFLICT (hour) DO UPDATE SET first_seq = min(first_seq, excluded.first_seq), last_seq = max(last_seq, excluded.last_seq);
END;
