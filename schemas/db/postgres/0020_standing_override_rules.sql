-- Standing rules for emergency overrides (issue 21 §4): an override of an
-- `emergency` referral that a rule of the DPO's signed-off `overrides.toml`
-- covers takes effect at once. `standing_rule` names that rule
-- (`overrides.toml#<n>`); `decided_by` then holds the same name, as no
-- person decided. NULL for every override a DPO decides or that lapses.
ALTER TABLE emergency_overrides ADD COLUMN standing_rule TEXT;
