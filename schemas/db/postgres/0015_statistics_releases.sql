-- The first signed answer for each closed period, kept (issue 20 §2): every
-- later request for the period gets the same answer, so that two answers
-- of one period can never be subtracted (after an erasure, say, or a change
-- of the disclosure settings) to tell about one case.

CREATE TABLE statistics_releases (
    period TEXT PRIMARY KEY,
    answer TEXT NOT NULL,
    released_ms BIGINT NOT NULL
);
