//! Matching tracing requests across gateways (issue 22 §2), the pure part
//! both sides share: who of a case is matched, the fixed layout of a query
//! and of an index entry, which cases a responding gateway may index for
//! an asking organisation, and how the asking gateway scores an entry.
//!
//! Sizes are fixed so that nothing about a case (how many names, how many
//! relatives) shows in what crosses the wire: a query is always
//! [`QUERY_SLOTS`] blinded elements, an entry always [`SUBJECT_SLOTS`] and
//! [`SOUGHT_SLOTS`] outputs, the rest filled with random padding.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Utc};

use super::case::{Case, FamilyMember, Relationship, Sex};
use super::consent::Consent;
use super::decide::{decide_from, CategoryFact, DecisionFacts};
use super::matching::{families, index_keys, query_keys, KeyFamily, MatchKey, PersonToMatch};
use super::policy::{CaseFacts, DataProtectionPolicy};
use super::recipient::Recipient;
use super::vocab::{DataCategory, Purpose};
use super::CountryCode;

/// Relatives of one case who are sought, at most: beyond, a request would
/// let one query try many names.
pub const SOUGHT_PEOPLE: usize = 4;
/// Outputs of a case's subject in an index entry: every family of one
/// person (each part, its sound, the whole name), each under two years and
/// two sexes at most.
pub const SUBJECT_SLOTS: usize = 4 * (2 * super::matching::MAX_PARTS + 1);
/// Outputs of the relatives sought in an index entry.
pub const SOUGHT_SLOTS: usize = SOUGHT_PEOPLE * SUBJECT_SLOTS;
/// Blinded elements in every query, real or padding.
pub const QUERY_SLOTS: usize = 512;

/// Who of a case is matched: the person the case is about, and the
/// relatives they look for (their family as recorded, named ones only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeopleToMatch {
    pub subject: PersonToMatch,
    pub sought: Vec<PersonToMatch>,
}

fn sex_of(relationship: Relationship) -> Option<Sex> {
    match relationship {
        Relationship::Mother => Some(Sex::Female),
        Relationship::Father => Some(Sex::Male),
        _ => None,
    }
}

fn relative(member: &FamilyMember) -> PersonToMatch {
    PersonToMatch {
        names: member.given_names.iter().chain(&member.family_name).map(|n| n.as_str().to_owned()).collect(),
        birth_year: member.date_of_birth.map(|d| d.year()),
        sex: sex_of(member.relationship),
    }
}

/// The people of `case` matching looks at; `None` when the subject has no
/// name to match on.
pub fn people_of(case: &Case) -> Option<PeopleToMatch> {
    let identity = case.identity.as_ref()?;
    let names = identity.given_names.iter().chain(&identity.family_name).chain(&identity.other_names).map(|n| n.as_str().to_owned()).collect();
    let subject = PersonToMatch { names, birth_year: identity.date_of_birth.map(|d| d.year()), sex: identity.sex };
    if families(&subject).is_empty() {
        return None;
    }
    let sought = case
        .family
        .iter()
        .flat_map(|family| family.members.iter().chain(&family.next_of_kin))
        .map(relative)
        .filter(|person| !families(person).is_empty())
        .take(SOUGHT_PEOPLE)
        .collect();
    Some(PeopleToMatch { subject, sought })
}

/// A case as its gateway indexes it: the keys of its subject and of the
/// relatives sought, each set within its slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKeys {
    pub subject: Vec<MatchKey>,
    pub sought: Vec<MatchKey>,
}

/// The keys `people` are indexed under.
pub fn index_keys_of(people: &PeopleToMatch) -> IndexKeys {
    let subject = index_keys(&people.subject).into_iter().take(SUBJECT_SLOTS).collect();
    let sought: BTreeSet<MatchKey> = people.sought.iter().flat_map(index_keys).collect();
    IndexKeys { subject, sought: sought.into_iter().take(SOUGHT_SLOTS).collect() }
}

/// Whose keys a slot of a query holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Asked {
    /// The asking case's subject, compared with the relatives an entry seeks.
    Subject,
    /// The n-th relative the asking case seeks, compared with an entry's subject.
    Sought(usize),
}

/// A query's layout: its real keys in the order they are blinded, and
/// whose family each belongs to. Padding follows them up to [`QUERY_SLOTS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPlan {
    pub keys: Vec<MatchKey>,
    slots: Vec<(Asked, KeyFamily)>,
}

/// The query about `people`: the subject first, then each relative sought,
/// a whole person at a time as long as they fit in [`QUERY_SLOTS`].
pub fn plan_query(people: &PeopleToMatch) -> QueryPlan {
    let mut plan = QueryPlan { keys: Vec::new(), slots: Vec::new() };
    let asked = std::iter::once((Asked::Subject, &people.subject)).chain(people.sought.iter().enumerate().map(|(n, p)| (Asked::Sought(n), p)));
    for (who, person) in asked {
        let keys = query_keys(person);
        if plan.keys.len() + keys.values().map(Vec::len).sum::<usize>() > QUERY_SLOTS {
            continue;
        }
        for (family, family_keys) in keys {
            for key in family_keys {
                plan.keys.push(key);
                plan.slots.push((who, family.clone()));
            }
        }
    }
    plan
}

/// How far an index entry agrees with the asking case, in families of keys
/// (each counted once, whatever year or sex variant agreed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Agreement {
    /// The best of the relatives the asker seeks against the entry's subject.
    pub sought_found: usize,
    /// The asker's subject against the relatives the entry seeks.
    pub subject_sought: usize,
}

impl Agreement {
    /// A match: either side's search meets the other's person in at least
    /// `threshold` families.
    pub fn is_match(&self, threshold: usize) -> bool {
        self.sought_found.max(self.subject_sought) >= threshold
    }
}

/// Scores one entry: `outputs` are the function's outputs for
/// `plan.keys`, in order; `subject` and `sought` the entry's.
pub fn score<T: Ord>(plan: &QueryPlan, outputs: &[T], subject: &BTreeSet<T>, sought: &BTreeSet<T>) -> Agreement {
    let mut agreeing: BTreeMap<Asked, BTreeSet<&KeyFamily>> = BTreeMap::new();
    for ((who, family), output) in plan.slots.iter().zip(outputs) {
        let against = if *who == Asked::Subject { sought } else { subject };
        if against.contains(output) {
            agreeing.entry(*who).or_default().insert(family);
        }
    }
    let count = |who: Asked| agreeing.get(&who).map_or(0, BTreeSet::len);
    Agreement {
        sought_found: agreeing.keys().filter(|who| **who != Asked::Subject).map(|who| count(*who)).max().unwrap_or(0),
        subject_sought: count(Asked::Subject),
    }
}

/// Whether a case held here may be in the index an asking organisation
/// sees: exactly when its identity and family could be referred to that
/// organisation for family tracing now, under the person's consent, this
/// gateway's DPO policy and the built-in rules (so never, for an
/// asylum-linked case, to an official of the person's origin state).
/// Matching discloses less than that referral would: only that a search
/// meets another, to the officer who searches.
pub fn may_be_matched(
    facts: &CaseFacts,
    consent: &Consent,
    sender_country: CountryCode,
    asker: &Recipient,
    policy: &DataProtectionPolicy,
    now: DateTime<Utc>,
) -> bool {
    let purpose = Purpose::FamilyTracing;
    let categories = [DataCategory::Identity, DataCategory::Family]
        .into_iter()
        .map(|category| (category, CategoryFact::Needed { consent: consent.coverage(purpose, category, asker, now).into() }))
        .collect();
    let facts = DecisionFacts { purpose, sender_country, at: now, recipient: Some(asker.clone()), case: facts.clone(), categories };
    decide_from(&facts, policy).is_allow()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::matching::agreement;

    fn person(names: &[&str], birth_year: Option<i32>, sex: Option<Sex>) -> PersonToMatch {
        PersonToMatch { names: names.iter().map(|n| (*n).to_owned()).collect(), birth_year, sex }
    }

    /// Scores `asking` against `held`'s entry, each key standing for its output.
    fn score_of(asking: &PeopleToMatch, held: &PeopleToMatch) -> Agreement {
        let plan = plan_query(asking);
        let entry = index_keys_of(held);
        score(&plan, &plan.keys, &entry.subject.into_iter().collect(), &entry.sought.into_iter().collect())
    }

    fn child_and_mother() -> (PeopleToMatch, PeopleToMatch) {
        let girl = person(&["Mariama", "Bah"], Some(2011), Some(Sex::Female));
        let mother = person(&["Fatoumata", "Bah"], Some(1984), Some(Sex::Female));
        let child_searches = PeopleToMatch { subject: girl.clone(), sought: vec![person(&["Fatoumata", "Bah"], Some(1985), None)] };
        let mother_searches = PeopleToMatch { subject: mother, sought: vec![person(&["Mariama Bah"], Some(2012), Some(Sex::Female))] };
        (child_searches, mother_searches)
    }

    #[test]
    fn a_childs_search_and_a_mothers_search_meet_both_ways() {
        let (child, mother) = child_and_mother();
        let both = score_of(&child, &mother);
        assert_eq!(both, Agreement { sought_found: 5, subject_sought: 5 });
        assert!(both.is_match(3));
        assert_eq!(score_of(&mother, &child), both);
        // Another family of the same name, born decades apart: nothing agrees.
        let other = PeopleToMatch { subject: person(&["Fatoumata", "Bah"], Some(1950), Some(Sex::Female)), sought: vec![] };
        assert_eq!(score_of(&child, &other), Agreement::default());
        assert!(!Agreement::default().is_match(1));
    }

    #[test]
    fn agreement_is_counted_per_family_and_per_relative_never_summed_across_them() {
        // Two relatives sought, each agreeing on one part of the entry's subject: not two agreements.
        let asking = PeopleToMatch {
            subject: person(&["Ali", "Hassan"], Some(1990), Some(Sex::Male)),
            sought: vec![person(&["Amina"], Some(1970), Some(Sex::Female)), person(&["Yusuf"], Some(1970), Some(Sex::Female))],
        };
        let held = PeopleToMatch { subject: person(&["Amina", "Yusuf"], Some(1970), Some(Sex::Female)), sought: vec![] };
        let scored = score_of(&asking, &held);
        assert_eq!(scored.sought_found, 2, "one part and its sound, for the best relative only");
        // The same count as the key-level agreement of that relative alone.
        let alone = agreement(&query_keys(&asking.sought[0]), &index_keys(&held.subject));
        assert_eq!(scored.sought_found, alone);
    }

    #[test]
    fn sizes_never_exceed_their_slots_and_a_person_is_asked_whole_or_not_at_all() {
        let many: Vec<String> = (0..12).map(|i| format!("name{}", "q".repeat(i))).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let people = PeopleToMatch { subject: person(&many, None, None), sought: (0..SOUGHT_PEOPLE).map(|_| person(&many, None, None)).collect() };
        let plan = plan_query(&people);
        assert!(plan.keys.len() <= QUERY_SLOTS);
        let per_person = query_keys(&people.subject).values().map(Vec::len).sum::<usize>();
        assert_eq!(plan.keys.len() % per_person, 0, "whole people only");
        let entry = index_keys_of(&people);
        assert!(entry.subject.len() <= SUBJECT_SLOTS && entry.sought.len() <= SOUGHT_SLOTS);
    }

    #[test]
    fn the_people_of_a_case_are_its_subject_and_named_relatives() {
        let case: Case = serde_json::from_value(serde_json::json!({
            "identity": {"given_names": "Mariama", "family_name": "Bah", "sex": "female", "date_of_birth": "2011-03-02"},
            "family": {"members": [
                {"relationship": "mother", "given_names": "Fatoumata", "family_name": "Bah"},
                {"relationship": "sibling"}
            ]}
        }))
        .unwrap();
        let people = people_of(&case).unwrap();
        assert_eq!(people.subject, person(&["Mariama", "Bah"], Some(2011), Some(Sex::Female)));
        assert_eq!(people.sought, vec![person(&["Fatoumata", "Bah"], None, Some(Sex::Female))]);
        assert_eq!(people_of(&Case::default()), None, "no name, nothing to match");
    }
}
