//! The lifecycle rules of `domain::lifecycle` rendered as SQL, so that a
//! move whose starting state is only known to the database (another worker
//! may have moved the row since it was read) is still one statement, and
//! still decided by the domain's function: the `CASE` below is its table.
//! State names come only from the enums; they are `a-z` and `_`, so they
//! are written into the statement as literals safely.

use crate::domain::lifecycle::{InboxState, OutboxState, ReferralStatus};

/// A closed set of states with its column values.
pub(super) trait State: Copy + PartialEq + 'static {
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
}

impl State for ReferralStatus {
    const ALL: &'static [Self] = ReferralStatus::ALL;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl State for OutboxState {
    const ALL: &'static [Self] = OutboxState::ALL;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl State for InboxState {
    const ALL: &'static [Self] = InboxState::ALL;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// An SQL list of states: `('a', 'b')`.
pub(super) fn list<S: State>(states: &[S]) -> String {
    let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.name())).collect();
    format!("({})", names.join(", "))
}

/// One move of a column over every state it may be in.
pub(super) struct Moves {
    /// `CASE column WHEN 'from' THEN 'to' ... ELSE column END`.
    pub set: String,
    /// The states that move (`IN` list): the rows to update.
    pub from: String,
}

/// The move `next` makes of `column`, for each state; `None` when no state
/// moves. A state that `next` keeps as it is (`Some` of itself) is among
/// those updated, with its value unchanged.
pub(super) fn moves<S: State>(column: &str, next: impl Fn(S) -> Option<S>) -> Option<Moves> {
    let moving: Vec<(S, S)> = S::ALL.iter().filter_map(|from| Some((*from, next(*from)?))).collect();
    if moving.is_empty() {
        return None;
    }
    let arms: String = moving
        .iter()
        .filter(|(from, to)| from != to)
        .map(|(from, to)| format!(" WHEN '{}' THEN '{}'", from.name(), to.name()))
        .collect();
    let set = if arms.is_empty() { column.to_owned() } else { format!("CASE {column}{arms} ELSE {column} END") };
    let from: Vec<S> = moving.iter().map(|(from, _)| *from).collect();
    Some(Moves { set, from: list(&from) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::{InboxEvent, OutboxEvent, ReferralEvent};

    #[test]
    fn a_move_is_the_domains_table() {
        let delivered = moves("status", |s: ReferralStatus| s.after(ReferralEvent::Delivered)).unwrap();
        assert_eq!(delivered.set, "CASE status WHEN 'queued' THEN 'delivered' ELSE status END");
        assert_eq!(delivered.from, "('queued')");
        let confirmed = moves("status", |s: ReferralStatus| s.after(ReferralEvent::ErasureConfirmed)).unwrap();
        assert_eq!(confirmed.from, "('withdrawn', 'erased_at_gateway')");
        assert!(moves("status", |s: ReferralStatus| s.after(ReferralEvent::ConsentNarrowed)).is_none());
        let withdrawn = moves("state", |s: OutboxState| s.after(OutboxEvent::Withdrawn)).unwrap();
        assert_eq!(withdrawn.set, "CASE state WHEN 'pending' THEN 'withdrawn' ELSE state END");
        // States kept as they are are updated too (a cut recorded beside them), unchanged.
        let narrowed = moves("state", |s: InboxState| s.after(InboxEvent::Narrowed { pushed: false })).unwrap();
        assert_eq!(narrowed.set, "state");
        assert_eq!(narrowed.from, "('available', 'pushing', 'acknowledged', 'narrowing_pushing')");
    }

    /// The last `CONSTRAINT <table>_<column>_known CHECK (<column> IN (...))`
    /// of each state column, across a backend's migrations in order.
    fn migrated_lists(backend: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/db").join(backend);
        let mut files: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|entry| entry.unwrap().path()).collect();
        files.sort();
        let mut lists = std::collections::BTreeMap::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (at, _) in text.match_indices("CONSTRAINT ") {
                let rest = &text[at + "CONSTRAINT ".len()..];
                let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                let Some(column) = name.strip_suffix("_known") else { continue };
                let body = &rest[rest.find("IN (").unwrap() + 4..];
                let values = body[..body.find(')').unwrap()].split(',').map(|v| v.trim().trim_matches('\'').to_owned()).collect();
                lists.insert(column.to_owned(), values);
            }
        }
        lists
    }

    fn strings<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
        values.map(str::to_owned).collect()
    }

    fn names<S: State>() -> Vec<String> {
        S::ALL.iter().map(|s| s.name().to_owned()).collect()
    }

    #[test]
    fn the_migrations_lists_are_the_enums() {
        use crate::domain::lifecycle::ReferralEvent;
        use crate::domain::signoff::{PolicyVersionState, Verdict};
        let events: Vec<String> = ReferralEvent::ALL.iter().map(|e| e.as_str().to_owned()).collect();
        let policy_states: Vec<String> = PolicyVersionState::ALL.iter().map(|s| s.as_str().to_owned()).collect();
        let verdicts: Vec<String> = Verdict::ALL.iter().map(|v| v.as_str().to_owned()).collect();
        let priorities: Vec<String> = crate::domain::priority::Priority::ALL.iter().map(|p| p.as_str().to_owned()).collect();
        let deadlines: Vec<String> = crate::domain::priority::DeadlineKind::ALL.iter().map(|d| d.as_str().to_owned()).collect();
        for backend in ["sqlite", "postgres"] {
            let lists = migrated_lists(backend);
            let wanted = [
                ("referrals_status", names::<ReferralStatus>()),
                ("referral_events_status", events.clone()),
                ("outbox_state", names::<OutboxState>()),
                ("inbox_state", names::<InboxState>()),
                ("policy_versions_state", policy_states.clone()),
                ("policy_signoffs_verdict", verdicts.clone()),
                ("referrals_priority", priorities.clone()),
                ("referrals_overdue_warned", deadlines.clone()),
                ("inbox_priority", priorities.clone()),
                ("callbacks_state", strings(crate::domain::lifecycle::CallbackState::ALL.iter().map(|s| s.as_str()))),
                ("emergency_overrides_reason", strings(crate::domain::emergency_override::OverrideReason::ALL.iter().map(|s| s.as_str()))),
                ("emergency_overrides_state", strings(crate::domain::emergency_override::OverrideState::ALL.iter().map(|s| s.as_str()))),
            ];
            assert_eq!(lists.len(), wanted.len(), "{backend}: {lists:?}");
            for (column, values) in wanted {
                assert_eq!(lists.get(column), Some(&values), "{backend}: {column}");
            }
        }
    }
}
