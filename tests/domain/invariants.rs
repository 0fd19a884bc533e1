//! Property tests over random cases, consents, recipients, purposes and
//! policies: the guarantees of the decision hold for every input.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use proptest::prelude::*;
use referral_gateway::domain::baseline::{needed_fields, required_categories};
use referral_gateway::domain::case::*;
use referral_gateway::domain::consent::*;
use referral_gateway::domain::decide::{decide, decide_and_minimise};
use referral_gateway::domain::decision::Decision;
use referral_gateway::domain::minimise::{minimise, Payload};
use referral_gateway::domain::policy::SharingPolicy;
use referral_gateway::domain::recipient::{Recipient, Service};
use referral_gateway::domain::text::{NoteText, ShortText};
use referral_gateway::domain::*;
use serde_json::Value;

use crate::support::{default_policy, italy, now, permit_all_policy};

const COUNTRIES: &[&str] = &["ITA", "NGA", "GMB", "ERI", "ETH", "GIN", "SOM"];

fn country() -> impl Strategy<Value = CountryCode> {
    prop::sample::select(COUNTRIES).prop_map(|c| CountryCode::parse(c).unwrap())
}

fn countries() -> impl Strategy<Value = BTreeSet<CountryCode>> {
    prop::collection::btree_set(country(), 0..3)
}

/// Personal values carry a prefix found nowhere in the vocabulary, reason
/// codes or policy ids, so that finding one in a decision is a real leak.
fn text() -> impl Strategy<Value = ShortText> {
    "Zq[a-z]{6}".prop_map(|t| ShortText::parse(&t).unwrap())
}

fn date() -> impl Strategy<Value = NaiveDate> {
    (1950i32..2026, 1u32..13, 1u32..29).prop_map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap())
}

fn subset<T: Copy + Ord + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = BTreeSet<T>> {
    prop::sample::subsequence(all, 0..=all.len().min(4)).prop_map(|v| v.into_iter().collect())
}

fn place() -> impl Strategy<Value = Place> {
    (country(), prop::option::of(text())).prop_map(|(country, locality)| Place { country, locality })
}

fn identity() -> impl Strategy<Value = Identity> {
    (prop::option::of(text()), prop::option::of(text()), prop::option::of(date()), countries(), prop::option::of(place()))
        .prop_map(|(given_names, family_name, date_of_birth, nationalities, former_habitual_residence)| Identity {
            given_names,
            family_name,
            sex: Some(Sex::Female),
            date_of_birth,
            nationalities,
            former_habitual_residence,
            ..Identity::default()
        })
}

fn best_interests() -> impl Strategy<Value = Option<BestInterests>> {
    prop_oneof![
        Just(None),
        Just(Some(BestInterests::InProgress {})),
        (date(), prop::option::of(prop::sample::select(&[DurableSolution::ReturnToCountryOfOrigin, DurableSolution::LocalIntegration][..])))
            .prop_map(|(completed_on, recommendation)| Some(BestInterests::Completed { completed_on, recommendation })),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let people = (
        prop::option::of(identity()),
        prop::option::of(text().prop_map(|phone| Contact { phone: Some(phone), ..Contact::default() })),
        prop::collection::vec(
            (text(), prop::option::of(country())).prop_map(|(number, issuing_country)| Document {
                document_type: DocumentType::Passport,
                number: Some(number),
                issuing_country,
                expiry: None,
            }),
            0..2,
        ),
        prop::option::of((text(), prop::option::of(place())).prop_map(|(name, last_known_location)| Family {
            members: vec![FamilyMember {
                relationship: Relationship::Mother,
                given_names: Some(name),
                family_name: None,
                date_of_birth: None,
                last_known_location,
                contact: None,
            }],
            next_of_kin: None,
        })),
    );
    let needs = (
        prop::option::of((text(), text()).prop_map(|(condition, medication)| Health {
            conditions: vec![condition],
            medication_needs: vec![medication],
            fitness_to_travel: Some(FitnessToTravel::Fit),
            ..Health::default()
        })),
        prop::option::of(subset(ProtectionProfile::ALL).prop_map(|profiles| Protection { profiles, ..Protection::default() })),
        prop::option::of((subset(AsylumStatus::ALL), countries(), any::<bool>()).prop_map(|(status, feared_return, applied)| Asylum {
            status,
            feared_return,
            applications: if applied {
                vec![AsylumApplication { country: CountryCode::parse("ITA").unwrap(), status: ApplicationStatus::Rejected, lodged_on: None, decided_on: None }]
            } else {
                Vec::new()
            },
        })),
        prop::option::of((prop::option::of(text()), best_interests()).prop_map(|(guardian, determination)| ChildSafeguards {
            guardian: guardian.map(|name| Guardian { role: GuardianRole::AppointedGuardian, given_names: Some(name), family_name: None, organisation: None, contact: None }),
            best_interests_assessment: None,
            best_interests_determination: determination,
        })),
        prop::option::of(prop::option::of(place()).prop_map(|destination| ReturnLogistics { destination, transport: Some(TransportMode::Air), ..ReturnLogistics::default() })),
        prop::option::of(Just(ReintegrationNeeds { needs: [ReintegrationNeed::Shelter].into(), preferred_location: None })),
        prop::collection::vec("Zq[a-z]{6} note".prop_map(|n| NoteText::parse(&n).unwrap()), 0..2),
    );
    (people, needs).prop_map(|((identity, contact, documents, family), (health, protection, asylum, child_safeguards, return_logistics, reintegration_needs, case_notes))| Case {
        identity,
        contact,
        documents,
        family,
        health,
        protection,
        asylum,
        child_safeguards,
        return_logistics,
        reintegration_needs,
        case_notes,
    })
}

fn recipient() -> impl Strategy<Value = Recipient> {
    (prop::sample::select(RecipientKind::ALL), country(), prop::option::of(country()), any::<bool>(), subset(Service::ALL))
        .prop_map(|(kind, country, represents, listed, services)| {
            let recipient = Recipient::new(OrgId::parse("rcp-under-test").unwrap(), country, kind, listed, services);
            match represents {
                Some(state) => recipient.representing(state),
                None => recipient,
            }
        })
}

fn selector(recipient: Recipient) -> impl Strategy<Value = RecipientSelector> {
    prop_oneof![
        Just(RecipientSelector::new(Some(recipient.id.clone()), None, None).unwrap()),
        Just(RecipientSelector::new(None, Some(recipient.kind), None).unwrap()),
        Just(RecipientSelector::new(None, None, Some(recipient.country)).unwrap()),
        (prop::sample::select(RecipientKind::ALL), country())
            .prop_map(|(kind, country)| RecipientSelector::new(None, Some(kind), Some(country)).unwrap()),
    ]
}

fn at_offset(days: i64) -> DateTime<Utc> {
    now() + Duration::days(days)
}

fn scope(recipient: Recipient) -> impl Strategy<Value = Scope> {
    (
        prop::sample::subsequence(Purpose::ALL, 1..=3),
        prop_oneof![
            Just(CategorySelection::All(AllCategories::All)),
            prop::sample::subsequence(DataCategory::ALL, 1..=11).prop_map(|c| CategorySelection::Listed(c.into_iter().collect())),
        ],
        prop::collection::vec(selector(recipient), 1..3),
        prop::option::of(-60i64..10),
        -30i64..365,
    )
        .prop_filter_map("valid window", |(purposes, categories, recipients, from, until)| {
            Scope::new(purposes.into_iter().collect(), categories, recipients, from.map(at_offset), at_offset(until)).ok()
        })
}

fn consent(recipient: Recipient) -> impl Strategy<Value = Consent> {
    (
        any::<bool>(),
        prop::collection::vec(scope(recipient.clone()), 0..3),
        prop::collection::vec(
            (subset(Purpose::ALL), subset(DataCategory::ALL)).prop_map(|(purposes, categories)| Refusal { purposes, categories, recipients: Vec::new() }),
            0..2,
        ),
        prop::option::weighted(0.1, -5i64..0),
    )
        .prop_map(|(by_guardian, scopes, refusals, withdrawn)| Consent {
            given_by: if by_guardian {
                ConsentGiver::Guardian { role: GuardianRole::AppointedGuardian, given_names: None, family_name: None, organisation: None }
            } else {
                ConsentGiver::Subject {}
            },
            method: ConsentMethod::Written,
            given_at: at_offset(-90),
            informed_in_language: None,
            scopes,
            refusals,
            withdrawn_at: withdrawn.map(at_offset),
        })
}

#[derive(Debug)]
struct Input {
    case: Case,
    consent: Consent,
    recipient: Recipient,
    purpose: Purpose,
    permissive: bool,
}

fn input() -> impl Strategy<Value = Input> {
    recipient().prop_flat_map(|recipient| {
        (case(), consent(recipient.clone()), Just(recipient), prop::sample::select(Purpose::ALL), any::<bool>())
            .prop_map(|(case, consent, recipient, purpose, permissive)| Input { case, consent, recipient, purpose, permissive })
    })
}

impl Input {
    fn policy(&self) -> &'static SharingPolicy {
        if self.permissive { permit_all_policy() } else { default_policy() }
    }

    fn decide(&self) -> (Decision, Payload) {
        decide_and_minimise(&self.case, &self.consent, italy(), Some(&self.recipient), self.purpose, self.policy(), now())
    }

    fn touches_origin_state(&self) -> (bool, bool) {
        let origin = self.case.origin_states();
        let sits = origin.contains(&self.recipient.country);
        let acts = self.recipient.is_state_actor() && origin.contains(&self.recipient.state());
        (sits, acts)
    }
}

fn string_leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| string_leaves(v, out)),
        Value::Object(map) => map.values().for_each(|v| string_leaves(v, out)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn asylum_linked_cases_never_reach_a_state_actor_of_an_origin_state(input in input()) {
        let (sits, acts) = input.touches_origin_state();
        if input.case.is_asylum_linked() && input.recipient.is_state_actor() && (sits || acts) {
            let (decision, payload) = input.decide();
            prop_assert!(!decision.is_allow());
            prop_assert!(decision.sent().is_empty());
            prop_assert!(payload.is_empty());
        }
    }

    #[test]
    fn the_asylum_category_never_reaches_an_origin_state(input in input()) {
        let (sits, acts) = input.touches_origin_state();
        let (decision, payload) = input.decide();
        if sits || acts {
            prop_assert!(!decision.sent().contains_key(&DataCategory::Asylum));
            prop_assert!(payload.get(DataCategory::Asylum).is_none());
        }
    }

    #[test]
    fn sent_categories_are_within_consent_policy_and_baseline(input in input()) {
        let (decision, _) = input.decide();
        for (category, sent) in decision.sent() {
            let coverage = input.consent.coverage(input.purpose, *category, &input.recipient, now());
            prop_assert!(matches!(coverage, Coverage::Granted { .. }), "{category} sent without consent");
            prop_assert!(needed_fields(input.purpose, *category).is_some(), "{category} outside the baseline");
            prop_assert!(!sent.permitted_by.is_empty(), "{category} sent without a permit");
            if *category == DataCategory::CaseNotes || *category == DataCategory::Asylum {
                prop_assert!(matches!(coverage, Coverage::Granted { named: true, .. }), "{category} sent without being named");
            }
        }
    }

    #[test]
    fn withdrawn_or_expired_consent_always_denies(input in input()) {
        let all_expired = input.consent.scopes().iter().all(|s| s.valid_until() <= now());
        if input.consent.withdrawn_at.is_some() || all_expired {
            let (decision, payload) = input.decide();
            prop_assert!(!decision.is_allow());
            prop_assert!(payload.is_empty());
        }
    }

    #[test]
    fn the_payload_holds_only_sent_categories_and_baseline_fields(input in input()) {
        let (decision, payload) = input.decide();
        let sent: BTreeSet<DataCategory> = decision.sent_categories();
        prop_assert_eq!(payload.categories().collect::<BTreeSet<_>>(), sent);
        let json = payload.to_json();
        for (name, value) in json.as_object().unwrap() {
            let category: DataCategory = name.parse().unwrap();
            let fields = needed_fields(input.purpose, category).unwrap();
            let entries: Vec<&Value> = match value {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for entry in entries {
                if let Value::Object(map) = entry {
                    for key in map.keys() {
                        prop_assert!(fields.includes(key), "{category}.{key} is not in the {} baseline", input.purpose);
                    }
                }
            }
        }
    }

    #[test]
    fn children_need_a_guardian_and_a_determination_recommending_return(input in input()) {
        if input.case.is_child(now().date_naive()) {
            let (decision, _) = input.decide();
            if !input.consent.is_by_guardian() {
                prop_assert!(!decision.is_allow());
            }
            let recommends_return = matches!(
                input.case.best_interests_determination(),
                Some(BestInterests::Completed { recommendation: Some(DurableSolution::ReturnToCountryOfOrigin), .. })
            );
            if input.purpose == Purpose::Return && !recommends_return {
                prop_assert!(!decision.is_allow());
            }
        }
    }

    #[test]
    fn decisions_never_contain_a_value_from_the_case(input in input()) {
        let (decision, _) = input.decide();
        let decision_json = serde_json::to_string(&decision).unwrap();
        let mut leaves = Vec::new();
        string_leaves(&serde_json::to_value(&input.case).unwrap(), &mut leaves);
        for leaf in leaves.iter().filter(|l| l.starts_with("Zq")) {
            prop_assert!(!decision_json.contains(leaf.as_str()), "a case value leaks into the decision");
        }
        for reason in decision.deny_reasons() {
            prop_assert!(!reason.as_str().contains("Zq"));
        }
    }

    #[test]
    fn allow_and_deny_are_consistent(input in input()) {
        let (decision, payload) = input.decide();
        prop_assert_eq!(decision.is_allow(), decision.deny_reasons().is_empty());
        if decision.is_allow() {
            for required in required_categories(input.purpose) {
                prop_assert!(decision.sent().contains_key(required), "{required} required");
            }
            prop_assert!(!payload.is_empty());
        } else {
            prop_assert!(decision.sent().is_empty());
            prop_assert!(payload.is_empty());
        }
    }

    #[test]
    fn decide_then_minimise_equals_the_one_pass_path(input in input()) {
        let (decision, payload) = input.decide();
        let separate = decide(&input.case, &input.consent, italy(), Some(&input.recipient), input.purpose, input.policy(), now());
        prop_assert_eq!(&separate, &decision);
        prop_assert_eq!(minimise(&input.case, &separate), payload);
    }
}

/// The generators must reach the interesting regions, or the properties above
/// hold vacuously.
#[test]
fn the_generators_reach_allows_firewall_cases_and_children() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut allows, mut firewalled, mut children) = (0, 0, 0);
    for _ in 0..400 {
        let input = input().new_tree(&mut runner).unwrap().current();
        let (sits, acts) = input.touches_origin_state();
        firewalled += usize::from(input.case.is_asylum_linked() && input.recipient.is_state_actor() && (sits || acts));
        children += usize::from(input.case.is_child(now().date_naive()));
        allows += usize::from(input.decide().0.is_allow());
    }
    assert!(allows >= 10, "only {allows} allows");
    assert!(firewalled >= 10, "only {firewalled} firewall cases");
    assert!(children >= 10, "only {children} children");
}
