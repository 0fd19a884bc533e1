//! Matching tracing requests across gateways (issue 22 §2), the pure part
//! both sides share: who of a case is matched, the fixed layout of a query
//! and of an index entry, which cases a responding gateway may index for
//! an asking organisation, and how the asking gateway scores an entry.
//!
//! Sizes are fixed so that nothing about a case (how many names, how many
//! relatives) shows in what crosses the wire: a query is always
//! [`QUERY_SLOTS`] blinded elements, an entry always a block of
//! [`PERSON_SLOTS`] outputs for its subject and for each of
//! [`SOUGHT_PEOPLE`] relatives, the rest filled with random padding.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Utc};

use super::case::{Case, FamilyMember, Relationship, Sex};
use super::consent::Consent;
use super::decide::{decide_from, CategoryFact, DecisionFacts};
use super::decision::Decision;
use super::matching::{families, index_keys, query_keys, KeyFamily, MatchKey, PersonToMatch};
use super::policy::{CaseFacts, DataProtectionPolicy};
use super::recipient::Recipient;
use super::vocab::{DataCategory, Purpose};
use super::CountryCode;

/// Relatives of one case who are sought, at most: beyond, a request would
/// let one query try many names.
pub const SOUGHT_PEOPLE: usize = 4;
/// Families of keys of one person, at most: each name part, its sound, and
/// the whole name.
const FAMILIES: usize = 2 * super::matching::MAX_PARTS + 1;
/// Outputs of one person in an index entry: every family, each under two
/// years and two sexes at most. An entry holds its subject and each
/// relative sought in a block of this size.
pub const PERSON_SLOTS: usize = 4 * FAMILIES;
/// Blinded elements in every query, real or padding: room for the subject
/// and every relative sought, each asked under four years and two sexes.
pub const QUERY_SLOTS: usize = (1 + SOUGHT_PEOPLE) * 8 * FAMILIES;

/// Who of a case is matched: the person the case is about, and the
/// relatives they look for (their family as recorded, named ones only,
/// closest first; not the next of kin, a contact rather than someone sought).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Closest relatives first: those a tracing request is most often about.
fn closeness(relationship: Relationship) -> u8 {
    match relationship {
        Relationship::Mother | Relationship::Father | Relationship::Parent | Relationship::Child => 0,
        Relationship::Sibling | Relationship::Spouse => 1,
        Relationship::Grandparent | Relationship::AuntOrUncle => 2,
        Relationship::Cousin | Relationship::OtherRelative | Relationship::Other => 3,
    }
}

fn relative(member: &FamilyMember) -> PersonToMatch {
    PersonToMatch {
        names: member.given_names.iter().chain(&member.family_name).map(|n| n.as_str().to_owned()).collect(),
        other_names: Vec::new(),
        birth_year: member.date_of_birth.map(|d| d.year()),
        sex: sex_of(member.relationship),
    }
}

/// The people of `case` matching looks at; `None` when the subject has no
/// name to match on.
pub fn people_of(case: &Case) -> Option<PeopleToMatch> {
    let identity = case.identity.as_ref()?;
    let subject = PersonToMatch {
        names: identity.given_names.iter().chain(&identity.family_name).map(|n| n.as_str().to_owned()).collect(),
        other_names: identity.other_names.iter().map(|n| n.as_str().to_owned()).collect(),
        birth_year: identity.date_of_birth.map(|d| d.year()),
        sex: identity.sex,
    };
    if families(&subject).is_empty() {
        return None;
    }
    let mut members: Vec<&FamilyMember> = case.family.iter().flat_map(|family| &family.members).collect();
    members.sort_by_key(|member| closeness(member.relationship));
    let sought = members.into_iter().map(relative).filter(|person| !families(person).is_empty()).take(SOUGHT_PEOPLE).collect();
    Some(PeopleToMatch { subject, sought })
}

/// A case as its gateway indexes it: the keys of its subject, and of each
/// relative sought apart (agreement is never summed across relatives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKeys {
    pub subject: Vec<MatchKey>,
    pub sought: Vec<Vec<MatchKey>>,
}

/// The keys `people` are indexed under.
pub fn index_keys_of(people: &PeopleToMatch) -> IndexKeys {
    let keys = |person: &PersonToMatch| index_keys(person).into_iter().take(PERSON_SLOTS).collect();
    IndexKeys { subject: keys(&people.subject), sought: people.sought.iter().take(SOUGHT_PEOPLE).map(keys).collect() }
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
#[derive(Clone, PartialEq, Eq)]
pub struct QueryPlan {
    pub keys: Vec<MatchKey>,
    slots: Vec<(Asked, KeyFamily)>,
}

/// Shows how many keys, never a name.
impl std::fmt::Debug for QueryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryPlan").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
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
/// `plan.keys`, in order; `subject` is the entry's subject, `sought` each
/// relative the entry seeks.
pub fn score<T: Ord>(plan: &QueryPlan, outputs: &[T], subject: &BTreeSet<T>, sought: &[BTreeSet<T>]) -> Agreement {
    // Families of each asked person agreeing with the subject, and of the
    // asker's subject agreeing with each relative sought.
    let mut found: BTreeMap<Asked, BTreeSet<&KeyFamily>> = BTreeMap::new();
    let mut met: BTreeMap<usize, BTreeSet<&KeyFamily>> = BTreeMap::new();
    for ((who, family), output) in plan.slots.iter().zip(outputs) {
        if *who == Asked::Subject {
            for (n, relative) in sought.iter().enumerate() {
                if relative.contains(output) {
                    met.entry(n).or_default().insert(family);
                }
            }
        } else if subject.contains(output) {
            found.entry(*who).or_default().insert(family);
        }
    }
    Agreement {
        sought_found: found.values().map(BTreeSet::len).max().unwrap_or(0),
        subject_sought: met.values().map(BTreeSet::len).max().unwrap_or(0),
    }
}

/// The categories of a family-tracing request that matching reads and its
/// decision needed: identity and family, where the case holds them in a
/// form the purpose needs (as [`crate::domain::decide::gather`] found).
/// Kept with the request's match entry: the decision on matching is made
/// later, for each asker, without the case.
pub fn categories_matched(facts: &DecisionFacts) -> BTreeSet<DataCategory> {
    [DataCategory::Identity, DataCategory::Family]
        .into_iter()
        .filter(|category| matches!(facts.categories.get(category), Some(CategoryFact::Needed { .. })))
        .collect()
}

/// Whether an entry may be shown to `asker` at all, before its decision:
/// never, for an asylum-linked case, when the asker sits in or acts for one
/// of the person's origin states. The match would be computed by that
/// state's gateway, whatever the consent, the policy or end-to-end keys say.
pub fn outside_origin_states(facts: &CaseFacts, asker: &Recipient) -> bool {
    !(fled_from(facts, asker.country) || fled_from(facts, asker.state()))
}

/// Whether the case is asylum-linked and `country` one of the person's
/// origin states: whose gateway never computes a match about it (the
/// asking gateway asks no such gateway, the answering one shows no entry to it).
pub fn fled_from(facts: &CaseFacts, country: CountryCode) -> bool {
    facts.asylum_linked && facts.origin_states.contains(&country)
}

/// Whether a case held here may be in the index an asking organisation
/// sees: the decision a family-tracing referral of its identity and family
/// to that organisation would get now, under the person's consent, this
/// gateway's DPO policy and the built-in rules (so never, for an
/// asylum-linked case, to an official of the person's origin state).
/// `needed` is [`categories_matched`] of the request. Matching discloses
/// less than that referral would: only that a search meets another, to
/// the organisation that searches.
pub fn match_decision(
    facts: &CaseFacts,
    needed: &BTreeSet<DataCategory>,
    consent: &Consent,
    sender_country: CountryCode,
    asker: &Recipient,
    policy: &DataProtectionPolicy,
    now: DateTime<Utc>,
) -> Decision {
    let purpose = Purpose::FamilyTracing;
    let categories = needed
        .iter()
        .filter(|category| matches!(category, DataCategory::Identity | DataCategory::Family))
        .map(|category| (*category, CategoryFact::Needed { consent: consent.coverage(purpose, *category, asker, now).into() }))
        .collect();
    let facts = DecisionFacts { purpose, sender_country, at: now, recipient: Some(asker.clone()), case: facts.clone(), categories };
    decide_from(&facts, policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::matching::agreement;

    fn person(names: &[&str], birth_year: Option<i32>, sex: Option<Sex>) -> PersonToMatch {
        PersonToMatch { names: names.iter().map(|n| (*n).to_owned()).collect(), other_names: vec![], birth_year, sex }
    }

    /// Scores `asking` against `held`'s entry, each key standing for its output.
    fn score_of(asking: &PeopleToMatch, held: &PeopleToMatch) -> Agreement {
        let plan = plan_query(asking);
        let entry = index_keys_of(held);
        let sought: Vec<BTreeSet<MatchKey>> = entry.sought.into_iter().map(|keys| keys.into_iter().collect()).collect();
        score(&plan, &plan.keys, &entry.subject.into_iter().collect(), &sought)
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
        let held = PeopleToMatch {
            subject: person(&["Amina", "Yusuf"], Some(1970), Some(Sex::Female)),
            // The entry seeks two relatives, each sharing one part with the asker's subject.
            sought: vec![person(&["Ali", "Musa"], Some(1990), Some(Sex::Male)), person(&["Hassan", "Omar"], Some(1990), Some(Sex::Male))],
        };
        let scored = score_of(&asking, &held);
        assert_eq!(scored, Agreement { sought_found: 2, subject_sought: 2 }, "one part and its sound, for the best relative only, both ways");
        assert!(!scored.is_match(3));
        // The same count as the key-level agreement of the best relative alone.
        assert_eq!(scored.sought_found, agreement(&query_keys(&asking.sought[0]), &index_keys(&held.subject)));
    }

    #[test]
    fn every_person_fits_their_slots_and_a_query_holds_the_subject_and_every_relative() {
        // Six parts each, every year and sex known: the most keys a person can have.
        let names = |n: usize| -> Vec<String> { (0..6).map(|i| format!("{}{}", ["ka", "lo", "mi", "nu", "pe", "ri"][i], "xyz".repeat(n + 1))).collect() };
        let full = |n: usize| {
            let names = names(n);
            PersonToMatch { names: names.clone(), other_names: vec![], birth_year: Some(1980 + n as i32), sex: Some(Sex::Female) }
        };
        let people = PeopleToMatch { subject: full(0), sought: (1..=SOUGHT_PEOPLE).map(full).collect() };
        for person in std::iter::once(&people.subject).chain(&people.sought) {
            assert!(index_keys(person).len() <= PERSON_SLOTS, "{} keys", index_keys(person).len());
        }
        let plan = plan_query(&people);
        let asked: usize = std::iter::once(&people.subject).chain(&people.sought).map(|p| query_keys(p).values().map(Vec::len).sum::<usize>()).sum();
        assert_eq!(plan.keys.len(), asked, "nobody left out");
        assert!(plan.keys.len() <= QUERY_SLOTS);
        assert!(!format!("{plan:?}").contains("xyz"));
    }

    #[test]
    fn the_people_of_a_case_are_its_subject_and_named_relatives_closest_first() {
        let case: Case = serde_json::from_value(serde_json::json!({
            "identity": {"given_names": "Mariama", "family_name": "Bah", "sex": "female", "date_of_birth": "2011-03-02", "other_names": ["Mimi"]},
            "family": {
                "members": [
                    {"relationship": "cousin", "given_names": "Awa", "family_name": "Diallo"},
                    {"relationship": "sibling"},
                    {"relationship": "mother", "given_names": "Fatoumata", "family_name": "Bah"}
                ],
                "next_of_kin": {"relationship": "other", "given_names": "Oumar", "family_name": "Sow"}
            }
        }))
        .unwrap();
        let people = people_of(&case).unwrap();
        assert_eq!(people.subject.names, ["Mariama", "Bah"]);
        assert_eq!(people.subject.other_names, ["Mimi"]);
        assert_eq!((people.subject.birth_year, people.subject.sex), (Some(2011), Some(Sex::Female)));
        let sought: Vec<&[String]> = people.sought.iter().map(|p| p.names.as_slice()).collect();
        assert_eq!(sought, [["Fatoumata", "Bah"], ["Awa", "Diallo"]], "the mother first, no unnamed sibling, no next of kin");
        assert_eq!(people.sought[0].sex, Some(Sex::Female));
        assert_eq!(people_of(&Case::default()), None, "no name, nothing to match");
    }
}
