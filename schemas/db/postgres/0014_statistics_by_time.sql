-- Statistics of a closed period (issue 20 §2) read referrals by the time
-- they were accepted, timeline steps by the time they happened, and
-- refused packets by the time they were refused.

CREATE INDEX referrals_by_acceptance ON referrals (created_ms, id);
CREATE INDEX referral_events_by_time ON referral_events (at_ms);
CREATE INDEX inbox_refused_by_time ON inbox (settled_ms, packet_id) WHERE state = 'refused';
