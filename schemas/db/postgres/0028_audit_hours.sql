-- The audit query for a time window (`GET /v1/audit?from=...&to=...`,
-- api.md §7.1) answers in chain order: `at_ms >= $1 AND at_ms < $2 ORDER
-- BY seq LIMIT n`. Without more, PostgreSQL walked the chain from its
-- start, filtering on the time, since it expects a window's entries to be
-- spread evenly along it (180 ms p99 for a day at 200,000 referrals), and
-- SQLite read every entry of the window and sorted them (21.6 ms p99 at a
-- million; issue 23 §3, performance.md "Flat as data grows").
--
-- An entry's time is the clock's when it was written, so times along the
-- chain may go back (a clock set back; two writes racing for the head).
-- This table keeps, for each hour (`at_ms / 3600000`), the first and last
-- `seq` of the entries timed in it, whatever their order: a window's
-- entries all lie between the first `seq` of its first hour and the last
-- of its last, and the query walks the chain there only. A trigger keeps
-- it, once per statement, so that no way of appending can miss it; the
-- log stays append-only, so nothing ever narrows it.
--
-- Appends wait from here to the commit (reads go on): an entry appended by
-- a replica of the earlier version between the count and the trigger's
-- creation would be counted nowhere, and hidden from every window.
LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE audit_hours (
    hour BIGINT PRIMARY KEY,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL
);
INSERT INTO audit_hours (hour, first_seq, last_seq)
    SELECT at_ms / 3600000, MIN(seq), MAX(seq) FROM audit_log GROUP BY at_ms / 3600000;
CREATE FUNCTION audit_log_hours() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO audit_hours (hour, first_seq, last_seq)
        SELECT at_ms / 3600000, MIN(seq), MAX(seq) FROM appended GROUP BY at_ms / 3600000
    ON CONFLICT (hour) DO UPDATE SET first_seq = LEAST(audit_hours.first_seq, excluded.first_seq),
        last_seq = GREATEST(audit_hours.last_seq, excluded.last_seq);
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_log_hours AFTER INSERT ON audit_log
REFERENCING NEW TABLE AS appended
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_hours();
