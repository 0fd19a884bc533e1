//! Property tests over random cases, consents, recipients, purposes and DPO
//! policies: the guarantees of DESIGN §1 and issue 2 hold for every input.
//! (One file of some 1,900 lines: the generators, the independent model and
//! the properties over them are one piece, and the model is only trusted if
//! it can be read whole beside the properties it checks.)
//!
//! Every personal value generated here (names, places, phone numbers, e-mail
//! addresses, document numbers, notes, guardian names) starts with `Qj`, which
//! appears nowhere in the vocabulary, reason codes or policy ids: finding one
//! in a decision is a leak, never a coincidence.
//!
//! The oracles are written independently of `src/`:
//! - a Rust model of each DPO policy set: the shipped one (mirrored rule by
//!   rule), permit-all, a hand-written set using the scope forms a DPO may
//!   write, and a few random sets rendered to Cedar from the same model and
//!   compiled once;
//! - a model of consent coverage read from the consent's JSON;
//! - a model of the whole decision built from those, the built-in rules and
//!   the purpose baseline.
//!
//! Every property is checked against every policy set, so a guarantee that
//! must survive a reckless DPO is tried against permit-all each time. Besides
//! plain random inputs, generators push inputs into the firewall's region
//! (recipients sitting in or acting for an origin state, asylum-linked cases)
//! so that the rarest guarantees are tried often; the last plain test checks
//! that the generators do reach allows, firewall cases, children, withdrawals,
//! expiries, sent case notes and sent asylum data.
//!
//! Policies scoped `resource in Category::"x"` are left out of the main
//! properties: the policy slicing mishandles them (see the ignored tests at
//! the end of this file).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use chrono::{DateTime, Duration, Months, NaiveDate, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use referral_gateway::domain::baseline::{Fields, needed_fields, required_categories};
use referral_gateway::domain::case::{
    ApplicationStatus, ArrivalAssistance, Asylum, AsylumApplication, BestInterests, Case, ChildSafeguards, Contact,
    Document, DocumentType, DurableSolution, EscortNeed, ExploitationType, Family, FamilyMember, FitnessToTravel,
    Guardian, GuardianRole, Health, Identity, Place, Protection, ReintegrationNeed, ReintegrationNeeds, Relationship,
    ReturnLogistics, RiskLevel, Sex, TransportMode, TracingWishes, Wish, FamilyAssessment, HouseholdMember, CapacityToCare,
    FamilyRisk, AssessmentRecommendation,
};
use referral_gateway::domain::consent::{
    AllCategories, CategorySelection, Consent, ConsentGiver, ConsentMethod, Coverage, OnwardConsent, RecipientSelector, Refusal, Scope,
};
use referral_gateway::domain::decide::{case_facts, decide, decide_and_minimise, decide_from, gather, DecisionFacts};
use referral_gateway::domain::onward::{onward_categories, onward_limits, OnwardRefusal, SentUnder};
use referral_gateway::domain::decision::{Decision, ReasonCode};
use referral_gateway::domain::inbound::{screen, Received, Screening};
use referral_gateway::domain::emergency_override::{decide_under_override, JustificationCode, OverrideReason, OverrideRefusal, OverrideRequest};
use referral_gateway::domain::impact::{impact, Changes, Impact};
use referral_gateway::domain::minimise::{Payload, minimise};
use referral_gateway::domain::policy::{DataProtectionPolicy, OnwardQuestion, PolicySource};
use referral_gateway::domain::recipient::{Recipient, Service};
use referral_gateway::domain::text::{NoteText, ShortText};
use referral_gateway::domain::{
    AsylumStatus, CountryCode, DataCategory, LanguageCode, OrgId, Profile, ProtectionProfile, Purpose, RecipientKind,
};
use serde_json::Value;

use crate::support::{default_policy, italy, now, permit_all_policy};

/// Cases per property; each case is decided under every policy set.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    // No regression files: a failure found here becomes a named regression test.
    ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------
// Vocabulary pools
// ---------------------------------------------------------------------------

/// Nationalities, residences, feared returns and recipients' countries all come
/// from this pool, so that the firewall is exercised often. ITA is the sender.
const COUNTRIES: &[&str] = &["ITA", "NGA", "GMB", "ERI", "ETH", "SOM", "AFG"];
const ORGS: &[&str] = &["qj-org-one", "qj-org-two", "qj-org-three"];
/// The one organisation of `ORGS` that publishes no end-to-end key.
const ORG_WITHOUT_KEY: &str = "qj-org-three";
const SEXES: &[Sex] = &[Sex::Female, Sex::Male, Sex::Other, Sex::Unknown];
const DOCUMENT_TYPES: &[DocumentType] = &[
    DocumentType::Passport,
    DocumentType::NationalId,
    DocumentType::BirthCertificate,
    DocumentType::TravelDocument,
    DocumentType::ResidencePermit,
    DocumentType::LaissezPasser,
    DocumentType::Other,
];
const RELATIONSHIPS: &[Relationship] = &[
    Relationship::Mother,
    Relationship::Father,
    Relationship::Parent,
    Relationship::Sibling,
    Relationship::Spouse,
    Relationship::Child,
    Relationship::Grandparent,
    Relationship::AuntOrUncle,
    Relationship::Cousin,
    Relationship::OtherRelative,
    Relationship::Other,
];
const FITNESS: &[FitnessToTravel] =
    &[FitnessToTravel::Fit, FitnessToTravel::FitWithEscort, FitnessToTravel::Unfit, FitnessToTravel::NotAssessed];
const ESCORTS: &[EscortNeed] = &[EscortNeed::None, EscortNeed::Medical, EscortNeed::Social, EscortNeed::ChildEscort];
const RISKS: &[RiskLevel] = &[RiskLevel::Low, RiskLevel::Medium, RiskLevel::High];
const EXPLOITATION: &[ExploitationType] = &[
    ExploitationType::Sexual,
    ExploitationType::Labour,
    ExploitationType::DomesticServitude,
    ExploitationType::ForcedCriminality,
    ExploitationType::ForcedMarriage,
    ExploitationType::Begging,
    ExploitationType::OrganRemoval,
    ExploitationType::Other,
];
const APPLICATION_STATUSES: &[ApplicationStatus] = &[
    ApplicationStatus::Pending,
    ApplicationStatus::Granted,
    ApplicationStatus::Rejected,
    ApplicationStatus::UnderAppeal,
    ApplicationStatus::Withdrawn,
];
const GUARDIAN_ROLES: &[GuardianRole] =
    &[GuardianRole::Parent, GuardianRole::LegalGuardian, GuardianRole::AppointedGuardian, GuardianRole::Institution];
const SOLUTIONS: &[DurableSolution] = &[
    DurableSolution::ReturnToCountryOfOrigin,
    DurableSolution::LocalIntegration,
    DurableSolution::ResettlementOrThirdCountry,
    DurableSolution::FamilyReunificationElsewhere,
];
const TRANSPORTS: &[TransportMode] = &[TransportMode::Air, TransportMode::Land, TransportMode::Sea];
const ARRIVAL: &[ArrivalAssistance] = &[
    ArrivalAssistance::AirportReception,
    ArrivalAssistance::OnwardTransport,
    ArrivalAssistance::TemporaryAccommodation,
    ArrivalAssistance::MedicalReception,
    ArrivalAssistance::FamilyReception,
];
const NEEDS: &[ReintegrationNeed] = &[
    ReintegrationNeed::Shelter,
    ReintegrationNeed::Medical,
    ReintegrationNeed::Psychosocial,
    ReintegrationNeed::Education,
    ReintegrationNeed::Livelihood,
    ReintegrationNeed::Legal,
    ReintegrationNeed::FamilyReunification,
    ReintegrationNeed::Documentation,
    ReintegrationNeed::Cash,
];
/// Government kinds, as DESIGN §1 lists them (a public employment service is
/// government too). Written out here, not taken from `is_state_actor()`.
const STATE_KINDS: &[RecipientKind] = &[
    RecipientKind::Immigration,
    RecipientKind::Police,
    RecipientKind::Border,
    RecipientKind::SocialWelfare,
    RecipientKind::ChildProtection,
    RecipientKind::HealthMinistry,
    RecipientKind::Consular,
    RecipientKind::AsylumAuthority,
    RecipientKind::NationalReferralMechanism,
    RecipientKind::EmploymentService,
];

const MINUTE: i64 = 1;
const DAY: i64 = 24 * 60 * MINUTE;

fn code(text: &str) -> CountryCode {
    CountryCode::parse(text).unwrap()
}

fn today() -> NaiveDate {
    now().date_naive()
}

fn minutes_from_now(minutes: i64) -> DateTime<Utc> {
    now() + Duration::minutes(minutes)
}

// ---------------------------------------------------------------------------
// Case strategies
// ---------------------------------------------------------------------------

fn country() -> impl Strategy<Value = CountryCode> {
    prop::sample::select(COUNTRIES).prop_map(code)
}

fn set_of<T: Ord + Clone + std::fmt::Debug + 'static>(
    all: &'static [T],
    max: usize,
) -> impl Strategy<Value = BTreeSet<T>> {
    prop::sample::subsequence(all, 0..=max.min(all.len())).prop_map(|v| v.into_iter().collect())
}

/// A personal value: `Qj`, a tag naming the field, random letters.
fn secret(tag: &'static str) -> impl Strategy<Value = ShortText> {
    "[a-z]{6}".prop_map(move |s| ShortText::parse(&format!("Qj{tag}{s}")).unwrap())
}

fn phone() -> impl Strategy<Value = ShortText> {
    "[0-9]{7}".prop_map(|digits| ShortText::parse(&format!("+Qj 39 {digits}")).unwrap())
}

fn note() -> impl Strategy<Value = NoteText> {
    ("[a-z]{6}", prop::option::of("[a-z ]{1,12}")).prop_map(|(first, second)| {
        let text = match second {
            Some(more) => format!("QjNote {first}\n{more}x"),
            None => format!("QjNote {first}"),
        };
        NoteText::parse(&text).unwrap()
    })
}

fn past_date(max_years: i64) -> impl Strategy<Value = NaiveDate> {
    (0..max_years * 365).prop_map(|days| today() - Duration::days(days))
}

fn future_date() -> impl Strategy<Value = NaiveDate> {
    (1i64..3 * 365).prop_map(|days| today() + Duration::days(days))
}

/// Children, adults, and dates around the 18th birthday.
fn date_of_birth() -> BoxedStrategy<NaiveDate> {
    let eighteen_years_ago = today().checked_sub_months(Months::new(12 * 18)).unwrap();
    prop_oneof![
        2 => (0i64..18 * 365).prop_map(|days| today() - Duration::days(days)),
        4 => (18 * 365 + 5..85 * 365i64).prop_map(|days| today() - Duration::days(days)),
        1 => (-2i64..=2).prop_map(move |days| eighteen_years_ago + Duration::days(days)),
    ]
    .boxed()
}

fn place() -> BoxedStrategy<Place> {
    (country(), prop::option::of(secret("Place"))).prop_map(|(country, locality)| Place { country, locality }).boxed()
}

fn language() -> impl Strategy<Value = LanguageCode> {
    prop::sample::select(&["ti", "en", "qjz"][..]).prop_map(|l| LanguageCode::parse(l).unwrap())
}

fn identity() -> BoxedStrategy<Identity> {
    (
        prop::option::of(secret("Given")),
        prop::option::of(secret("Family")),
        prop::collection::vec(secret("Alias"), 0..2),
        prop::option::of(prop::sample::select(SEXES)),
        prop::option::weighted(0.8, date_of_birth()),
        any::<bool>(),
        prop::option::of(place()),
        prop::collection::btree_set(country(), 0..3),
        // Languages are a set in all but type: the gateway refuses a repeated one.
        prop::collection::btree_set(language(), 0..2).prop_map(|set| set.into_iter().collect::<Vec<_>>()),
        prop::option::of(place()),
    )
        .prop_map(
            |(
                given_names,
                family_name,
                other_names,
                sex,
                date_of_birth,
                estimated,
                place_of_birth,
                nationalities,
                languages,
                former_habitual_residence,
            )| Identity {
                given_names,
                family_name,
                other_names,
                sex,
                date_of_birth_estimated: estimated && date_of_birth.is_some(),
                date_of_birth,
                place_of_birth,
                nationalities,
                languages,
                former_habitual_residence,
            },
        )
        .boxed()
}

fn contact() -> BoxedStrategy<Contact> {
    (
        prop::option::of(phone()),
        prop::option::of(secret("Mail")),
        prop::option::of(secret("Street")),
        prop::option::of(place()),
    )
        .prop_map(|(phone, email, address, current_location)| Contact { phone, email, address, current_location })
        .boxed()
}

fn document() -> BoxedStrategy<Document> {
    (
        prop::sample::select(DOCUMENT_TYPES),
        prop::option::of("[0-9]{7}".prop_map(|n| ShortText::parse(&format!("QjDoc{n}")).unwrap())),
        prop::option::of(country()),
        prop::option::of(future_date()),
    )
        .prop_map(|(document_type, number, issuing_country, expiry)| Document {
            document_type,
            number,
            issuing_country,
            expiry,
        })
        .boxed()
}

fn family_member() -> BoxedStrategy<FamilyMember> {
    (
        prop::sample::select(RELATIONSHIPS),
        prop::option::of(secret("Kin")),
        prop::option::of(secret("KinFamily")),
        prop::option::of(past_date(80)),
        prop::option::of(place()),
        prop::option::of(phone()),
    )
        .prop_map(|(relationship, given_names, family_name, date_of_birth, last_known_location, contact)| {
            FamilyMember { relationship, given_names, family_name, date_of_birth, last_known_location, contact }
        })
        .boxed()
}

fn family() -> BoxedStrategy<Family> {
    (prop::collection::vec(family_member(), 0..3), prop::option::of(family_member()))
        .prop_map(|(members, next_of_kin)| Family { members, next_of_kin })
        .boxed()
}

fn health() -> BoxedStrategy<Health> {
    (
        prop::collection::vec(secret("Condition"), 0..2),
        prop::option::of(1u8..=45),
        prop::option::of(secret("Disability")),
        prop::collection::vec(secret("Medication"), 0..2),
        prop::option::of(prop::sample::select(FITNESS)),
        prop::option::of(prop::sample::select(ESCORTS)),
    )
        .prop_map(|(conditions, pregnancy_weeks, disability, medication_needs, fitness_to_travel, escort_needs)| {
            Health { conditions, pregnancy_weeks, disability, medication_needs, fitness_to_travel, escort_needs }
        })
        .boxed()
}

fn protection() -> BoxedStrategy<Protection> {
    (set_of(ProtectionProfile::ALL, 3), prop::option::of(prop::sample::select(RISKS)), set_of(EXPLOITATION, 2))
        .prop_map(|(profiles, risk_level, exploitation_types)| Protection { profiles, risk_level, exploitation_types })
        .boxed()
}

fn asylum() -> BoxedStrategy<Asylum> {
    let application = (
        country(),
        prop::sample::select(APPLICATION_STATUSES),
        prop::option::of(past_date(10)),
        prop::option::of(past_date(5)),
    )
        .prop_map(|(country, status, lodged_on, decided_on)| AsylumApplication {
            country,
            status,
            lodged_on,
            decided_on,
        });
    (
        set_of(AsylumStatus::ALL, 2),
        prop::collection::vec(application, 0..2),
        prop::collection::btree_set(country(), 0..2),
    )
        .prop_map(|(status, applications, feared_return)| Asylum { status, applications, feared_return })
        .boxed()
}

fn best_interests() -> BoxedStrategy<BestInterests> {
    prop_oneof![
        1 => Just(BestInterests::NotStarted {}),
        1 => Just(BestInterests::InProgress {}),
        4 => (past_date(3), prop::option::weighted(0.8, prop::sample::select(SOLUTIONS)))
            .prop_map(|(completed_on, recommendation)| BestInterests::Completed { completed_on, recommendation }),
    ]
    .boxed()
}

fn child_safeguards() -> BoxedStrategy<ChildSafeguards> {
    let guardian = (
        prop::sample::select(GUARDIAN_ROLES),
        prop::option::of(secret("Guardian")),
        prop::option::of(secret("GuardianFamily")),
        prop::option::of(secret("GuardianOrg")),
        prop::option::of(phone()),
    )
        .prop_map(|(role, given_names, family_name, organisation, contact)| Guardian {
            role,
            given_names,
            family_name,
            organisation,
            contact,
        });
    (prop::option::of(guardian), prop::option::of(best_interests()), prop::option::weighted(0.7, best_interests()))
        .prop_map(|(guardian, best_interests_assessment, best_interests_determination)| ChildSafeguards {
            guardian,
            best_interests_assessment,
            best_interests_determination,
        })
        .boxed()
}

fn return_logistics() -> BoxedStrategy<ReturnLogistics> {
    (
        prop::option::of(future_date()),
        prop::option::of(place()),
        prop::collection::vec(country(), 0..3),
        prop::option::of(prop::sample::select(TRANSPORTS)),
        prop::option::of(prop::sample::select(ESCORTS)),
        set_of(ARRIVAL, 2),
    )
        .prop_map(|(travel_date, destination, route, transport, escort, arrival_assistance)| ReturnLogistics {
            travel_date,
            destination,
            route,
            transport,
            escort,
            arrival_assistance,
        })
        .boxed()
}

fn reintegration_needs() -> BoxedStrategy<ReintegrationNeeds> {
    (set_of(NEEDS, 3), prop::option::of(place()))
        .prop_map(|(needs, preferred_location)| ReintegrationNeeds { needs, preferred_location })
        .boxed()
}

fn wish() -> BoxedStrategy<Option<Wish>> {
    prop::option::of(prop::sample::select(vec![Wish::Yes, Wish::No, Wish::Undecided])).boxed()
}

fn tracing_wishes() -> BoxedStrategy<TracingWishes> {
    (wish(), wish(), wish())
        .prop_map(|(contact_with_family, whereabouts_shared, reunification)| TracingWishes { contact_with_family, whereabouts_shared, reunification })
        .boxed()
}

fn family_assessment() -> BoxedStrategy<FamilyAssessment> {
    let member = (prop::sample::select(RELATIONSHIPS), prop::option::of(1950u16..2020), any::<bool>())
        .prop_map(|(relationship, year_of_birth, caregiver)| HouseholdMember { relationship, year_of_birth, caregiver });
    let capacity = prop::sample::select(vec![CapacityToCare::Adequate, CapacityToCare::AdequateWithSupport, CapacityToCare::Inadequate, CapacityToCare::NotAssessed]);
    let risks = set_of(&[FamilyRisk::ViolenceInHousehold, FamilyRisk::Neglect, FamilyRisk::TraffickingOrExploitation, FamilyRisk::EconomicHardship], 2);
    let recommendation = prop::sample::select(vec![
        AssessmentRecommendation::ReunificationRecommended,
        AssessmentRecommendation::ReunificationWithSupport,
        AssessmentRecommendation::ReunificationNotRecommended,
        AssessmentRecommendation::FurtherAssessmentNeeded,
    ]);
    (past_date(1), prop::collection::vec(member, 0..3), capacity, risks, recommendation)
        .prop_map(|(assessed_on, household, capacity_to_care, risks, recommendation)| FamilyAssessment {
            assessed_on,
            household,
            capacity_to_care,
            risks,
            recommendation,
        })
        .boxed()
}

fn case() -> BoxedStrategy<Case> {
    (
        prop::option::weighted(0.92, identity()),
        prop::option::weighted(0.6, contact()),
        prop::collection::vec(document(), 0..3),
        prop::option::weighted(0.6, family()),
        prop::option::weighted(0.5, health()),
        prop::option::weighted(0.6, protection()),
        prop::option::weighted(0.55, asylum()),
        prop::option::weighted(0.5, child_safeguards()),
        prop::option::weighted(0.5, return_logistics()),
        prop::option::weighted(0.5, reintegration_needs()),
        (prop::collection::vec(note(), 0..3), prop::option::weighted(0.4, tracing_wishes()), prop::option::weighted(0.4, family_assessment())),
    )
        .prop_map(
            |(
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
                (case_notes, tracing_wishes, family_assessment),
            )| Case {
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
                tracing_wishes,
                family_assessment,
                case_notes,
            },
        )
        .boxed()
}

// ---------------------------------------------------------------------------
// Recipients and consents
// ---------------------------------------------------------------------------

fn org_id() -> impl Strategy<Value = OrgId> {
    prop::sample::select(ORGS).prop_map(|id| OrgId::parse(id).unwrap())
}

/// A recipient of one of `kinds` and whether the directory lists it as a state
/// actor. Every organisation but [`ORG_WITHOUT_KEY`] publishes an end-to-end
/// key (decided by the id rather than drawn, so that adding keys left the
/// other generators' draws as they were).
fn recipient(kinds: &'static [RecipientKind]) -> BoxedStrategy<(Recipient, bool)> {
    let main_service = prop::option::of(prop::sample::select(
        &[Service::ReturnAssistance, Service::ReintegrationAssistance, Service::FamilyTracing, Service::Livelihood][..],
    ));
    (
        org_id(),
        prop::sample::select(kinds),
        country(),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.3, country()),
        set_of(Service::ALL, 3),
        main_service,
    )
        .prop_map(|(id, kind, country, listed, represents, mut services, main)| {
            services.extend(main);
            let has_key = id.as_str() != ORG_WITHOUT_KEY;
            let recipient = Recipient::new(id, country, kind, listed, services).with_end_to_end_key(has_key);
            let recipient = match represents {
                Some(state) => recipient.representing(state),
                None => recipient,
            };
            (recipient, listed)
        })
        .boxed()
}

fn selector_for(recipient: &Recipient) -> BoxedStrategy<RecipientSelector> {
    let (id, kind, country_code) = (recipient.id.clone(), recipient.kind, recipient.country);
    prop_oneof![
        3 => Just(RecipientSelector::new(Some(id.clone()), None, None).unwrap()),
        3 => Just(RecipientSelector::new(None, Some(kind), None).unwrap()),
        2 => Just(RecipientSelector::new(None, None, Some(country_code)).unwrap()),
        1 => Just(RecipientSelector::new(Some(id), Some(kind), Some(country_code)).unwrap()),
        3 => (prop::option::of(org_id()), prop::option::of(prop::sample::select(RecipientKind::ALL)), prop::option::of(country()))
            .prop_filter_map("a selector names something", |(o, k, c)| RecipientSelector::new(o, k, c).ok()),
    ]
    .boxed()
}

/// `(valid_from, valid_until)`: ended, in force, not yet started, and the exact edges.
fn window() -> BoxedStrategy<(Option<DateTime<Utc>>, DateTime<Utc>)> {
    prop_oneof![
        2 => (0..400 * DAY, prop::option::of(MINUTE..400 * DAY)).prop_map(|(ago, length)| {
            let until = minutes_from_now(-ago);
            (length.map(|l| until - Duration::minutes(l)), until)
        }),
        5 => (MINUTE..400 * DAY, prop::option::of(0..400 * DAY))
            .prop_map(|(ahead, since)| (since.map(|s| minutes_from_now(-s)), minutes_from_now(ahead))),
        1 => (MINUTE..100 * DAY, MINUTE..400 * DAY).prop_map(|(start, length)| {
            (Some(minutes_from_now(start)), minutes_from_now(start + length))
        }),
        1 => Just((None, now())),
        1 => Just((Some(now()), minutes_from_now(MINUTE))),
    ]
    .boxed()
}

fn scope_for(recipient: &Recipient) -> BoxedStrategy<Scope> {
    let categories = prop_oneof![
        1 => Just(CategorySelection::All(AllCategories::All)),
        2 => prop::sample::subsequence(DataCategory::ALL, 1..=DataCategory::ALL.len())
            .prop_map(|c| CategorySelection::Listed(c.into_iter().collect())),
    ];
    (
        prop::sample::subsequence(Purpose::ALL, 1..=Purpose::ALL.len()),
        categories,
        prop::collection::vec(selector_for(recipient), 1..3),
        window(),
        prop::option::weighted(0.4, onward_consent()),
    )
        .prop_map(|(purposes, categories, recipients, (from, until), onward)| {
            Scope::new(purposes.into_iter().collect(), categories, recipients, from, until).unwrap().with_onward(onward)
        })
        .boxed()
}

fn onward_consent() -> BoxedStrategy<OnwardConsent> {
    (prop::sample::subsequence(RecipientKind::ALL, 1..5), prop::bool::weighted(0.3))
        .prop_map(|(kinds, leave_country)| OnwardConsent { recipient_kinds: kinds.into_iter().collect(), leave_country })
        .boxed()
}

fn refusal_for(recipient: &Recipient) -> BoxedStrategy<Refusal> {
    (set_of(Purpose::ALL, 2), set_of(DataCategory::ALL, 3), prop::collection::vec(selector_for(recipient), 0..2))
        .prop_map(|(purposes, categories, recipients)| Refusal { purposes, categories, recipients })
        .boxed()
}

fn giver() -> BoxedStrategy<ConsentGiver> {
    prop_oneof![
        Just(ConsentGiver::Subject {}),
        (
            prop::sample::select(GUARDIAN_ROLES),
            prop::option::of(secret("Consenter")),
            prop::option::of(secret("ConsenterFamily")),
            prop::option::of(secret("ConsenterOrg")),
        )
            .prop_map(|(role, given_names, family_name, organisation)| ConsentGiver::Guardian {
                role,
                given_names,
                family_name,
                organisation,
            }),
    ]
    .boxed()
}

fn consent_for(recipient: &Recipient) -> BoxedStrategy<Consent> {
    let given_at = prop_oneof![
        8 => (MINUTE..400 * DAY).prop_map(|ago| minutes_from_now(-ago)),
        1 => Just(now()),
        1 => (MINUTE..30 * DAY).prop_map(minutes_from_now),
    ];
    (
        giver(),
        prop::sample::select(&[ConsentMethod::Written, ConsentMethod::Verbal][..]),
        given_at,
        prop::option::of(language()),
        prop::collection::vec(scope_for(recipient), 0..4),
        prop::option::weighted(0.2, prop::collection::vec(refusal_for(recipient), 1..3)),
        prop::option::weighted(0.15, 0..100 * DAY),
    )
        .prop_map(|(given_by, method, given_at, informed_in_language, scopes, refusals, withdrawn)| Consent {
            given_by,
            method,
            given_at,
            informed_in_language,
            scopes,
            refusals: refusals.unwrap_or_default(),
            withdrawn_at: withdrawn.map(|ago| minutes_from_now(-ago)),
        })
        .boxed()
}

#[derive(Debug, Clone)]
struct Input {
    case: Case,
    consent: Consent,
    recipient: Recipient,
    /// Listed as a state actor by the directory (whatever its kind).
    listed: bool,
    purpose: Purpose,
}

fn input_to(kinds: &'static [RecipientKind]) -> BoxedStrategy<Input> {
    recipient(kinds)
        .prop_flat_map(|(recipient, listed)| {
            (case(), consent_for(&recipient), Just(recipient), Just(listed), prop::sample::select(Purpose::ALL))
                .prop_map(|(case, consent, recipient, listed, purpose)| Input {
                    case,
                    consent,
                    recipient,
                    listed,
                    purpose,
                })
        })
        .boxed()
}

fn input() -> BoxedStrategy<Input> {
    input_to(RecipientKind::ALL)
}

const NON_STATE_KINDS: &[RecipientKind] = &[
    RecipientKind::Iom,
    RecipientKind::Unhcr,
    RecipientKind::Unicef,
    RecipientKind::Icrc,
    RecipientKind::RedCrossRedCrescent,
    RecipientKind::Ngo,
    RecipientKind::HealthProvider,
];

/// Inputs where only rule (b)'s second half stands between the `asylum`
/// category and an origin state: a non-state organisation sitting in an
/// origin state, an asylum status (the one asylum field a purpose needs),
/// reintegration, and a scope in force that names `asylum` for it.
fn asylum_to_origin_input() -> BoxedStrategy<Input> {
    (origin_input(NON_STATE_KINDS, false), prop::sample::select(AsylumStatus::ALL), any::<bool>())
        .prop_map(|(mut input, status, by_country)| {
            input.purpose = Purpose::Reintegration;
            input.case.asylum.get_or_insert_with(Asylum::default).status.insert(status);
            let identity = input.case.identity.get_or_insert_with(Identity::default);
            identity.given_names.get_or_insert_with(|| ShortText::parse("QjGivenAsylum").unwrap());
            // Into the origin state by where the recipient sits.
            let sits_in = input.recipient.country;
            identity.nationalities.insert(sits_in);
            let selector = if by_country {
                RecipientSelector::new(None, Some(input.recipient.kind), Some(sits_in)).unwrap()
            } else {
                RecipientSelector::new(Some(input.recipient.id.clone()), None, None).unwrap()
            };
            let categories = [DataCategory::Identity, DataCategory::Asylum].into();
            let scope = Scope::new(
                [Purpose::Reintegration].into(),
                CategorySelection::Listed(categories),
                vec![selector],
                None,
                minutes_from_now(DAY),
            )
            .unwrap();
            input.consent.scopes.push(scope);
            input
        })
        .boxed()
}

/// Plain inputs, and inputs pushed into the firewall's region.
fn any_input() -> BoxedStrategy<Input> {
    prop_oneof![
        4 => input(),
        2 => origin_input(RecipientKind::ALL, false),
        2 => origin_input(RecipientKind::ALL, true),
        1 => asylum_to_origin_input(),
    ]
    .boxed()
}

/// Inputs where the recipient sits in, or acts for, one of the person's
/// origin states: its country (or represented state) is added to the case as
/// a nationality, the former residence or a feared return. With `linked`, the
/// case is also made asylum-linked by a status, an application or a feared return.
fn origin_input(kinds: &'static [RecipientKind], linked: bool) -> BoxedStrategy<Input> {
    (input_to(kinds), any::<bool>(), 0..3usize, prop::sample::select(AsylumStatus::ALL), 0..3usize, country())
        .prop_map(move |(mut input, use_state, via, status, link, feared)| {
            let target = if use_state { input.recipient.state() } else { input.recipient.country };
            let case = &mut input.case;
            match via {
                0 => {
                    case.identity.get_or_insert_with(Identity::default).nationalities.insert(target);
                }
                1 => {
                    let residence = Place { country: target, locality: None };
                    case.identity.get_or_insert_with(Identity::default).former_habitual_residence = Some(residence);
                }
                _ => {
                    case.asylum.get_or_insert_with(Asylum::default).feared_return.insert(target);
                }
            }
            if linked {
                let asylum = case.asylum.get_or_insert_with(Asylum::default);
                match link {
                    0 => {
                        asylum.status.insert(status);
                    }
                    1 => asylum.applications.push(AsylumApplication {
                        country: italy(),
                        status: ApplicationStatus::Rejected,
                        lodged_on: None,
                        decided_on: None,
                    }),
                    _ => {
                        asylum.feared_return.insert(feared);
                    }
                }
            }
            input
        })
        .boxed()
}

impl Input {
    fn case_is_child(&self) -> bool {
        case_facts(&self.case, &self.consent, now()).child
    }

    /// Government kind or listed: the model's reading, not `is_state_actor()`.
    fn state_actor(&self) -> bool {
        self.listed || STATE_KINDS.contains(&self.recipient.kind)
    }

    /// Whether `builtin.asylum_end_to_end` applies: an asylum-linked case, and
    /// a recipient (state actor or not) sitting in an origin state or acting for one.
    fn end_to_end_by_builtin(&self) -> bool {
        let facts = model_facts(self);
        facts.asylum_linked
            && (facts.origin.contains(&self.recipient.country) || facts.origin.contains(&self.recipient.state()))
    }

    /// Whether the recipient sits in an origin state, and whether it is a state
    /// actor acting for one (a consulate of an origin state abroad).
    fn origin_contact(&self) -> (bool, bool) {
        let origin = model_facts(self).origin;
        let sits = origin.contains(&self.recipient.country);
        let acts = self.state_actor() && origin.contains(&self.recipient.state());
        (sits, acts)
    }

    fn decide(&self, policy: &DataProtectionPolicy) -> (Decision, Payload) {
        decide_and_minimise(&self.case, &self.consent, italy(), Some(&self.recipient), self.purpose, policy, now())
    }

    fn coverage(&self, category: DataCategory) -> Coverage {
        self.consent.coverage(self.purpose, category, &self.recipient, now())
    }
}

// ---------------------------------------------------------------------------
// Policy model: rules that render to Cedar and evaluate in Rust
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Cond {
    Kind(RecipientKind),
    StateActor,
    Country(CountryCode),
    State(CountryCode),
    Service(Service),
    CategoryIn(Vec<DataCategory>),
    ActionIs(Purpose),
    Child,
    AsylumLinked,
    GuardianConsent,
    BestInterestsDetermined,
    HasProfile(Profile),
    OriginHasCountry,
    SenderIs(CountryCode),
    ConsentNamed,
}

#[derive(Debug, Clone)]
enum ActionScope {
    Any,
    Eq(Purpose),
    In(Vec<Purpose>),
}

#[derive(Debug, Clone)]
enum ResourceScope {
    Any,
    /// `resource == Category::"x"`
    Eq(DataCategory),
    /// `resource in Category::"x"`: categories have no parents, so the same as `==`.
    In(DataCategory),
    /// `resource is Category`: every request.
    Is,
}

#[derive(Debug, Clone)]
struct Rule {
    id: String,
    permit: bool,
    action: ActionScope,
    resource: ResourceScope,
    /// All must hold (one `when` clause).
    when: Vec<Cond>,
    /// Each is its own `unless` clause: none may hold.
    unless: Vec<Cond>,
}

/// Where a rule is evaluated: one category of one decision.
struct At<'a> {
    input: &'a Input,
    facts: &'a Facts,
    category: DataCategory,
    named: bool,
}

impl Cond {
    fn cedar(&self) -> String {
        match self {
            Cond::Kind(kind) => format!("principal.kind == Kind::\"{kind}\""),
            Cond::StateActor => "principal.state_actor".into(),
            Cond::Country(c) => format!("principal.country == \"{c}\""),
            Cond::State(c) => format!("principal.state == \"{c}\""),
            Cond::Service(s) => format!("principal.services.contains(Service::\"{s}\")"),
            Cond::CategoryIn(list) => {
                let items: Vec<String> = list.iter().map(|c| format!("Category::\"{c}\"")).collect();
                format!("[{}].contains(resource)", items.join(", "))
            }
            Cond::ActionIs(p) => format!("action == Action::\"{p}\""),
            Cond::Child => "context.case.child".into(),
            Cond::AsylumLinked => "context.case.asylum_linked".into(),
            Cond::GuardianConsent => "context.case.consent_by_guardian".into(),
            Cond::BestInterestsDetermined => "context.case.best_interests_determined".into(),
            Cond::HasProfile(p) => format!("context.case.profiles.contains(Profile::\"{}\")", p.as_str()),
            Cond::OriginHasCountry => "context.case.origin_states.contains(principal.country)".into(),
            Cond::SenderIs(c) => format!("context.sender_country == \"{c}\""),
            Cond::ConsentNamed => "context.consent.names_category".into(),
        }
    }

    fn holds(&self, at: &At) -> bool {
        let recipient = &at.input.recipient;
        match self {
            Cond::Kind(kind) => recipient.kind == *kind,
            Cond::StateActor => at.input.state_actor(),
            Cond::Country(c) => recipient.country == *c,
            Cond::State(c) => recipient.state() == *c,
            Cond::Service(s) => recipient.services.contains(s),
            Cond::CategoryIn(list) => list.contains(&at.category),
            Cond::ActionIs(p) => at.input.purpose == *p,
            Cond::Child => at.facts.child,
            Cond::AsylumLinked => at.facts.asylum_linked,
            Cond::GuardianConsent => at.facts.by_guardian,
            Cond::BestInterestsDetermined => at.facts.determined,
            Cond::HasProfile(p) => at.facts.profiles.contains(p.as_str()),
            Cond::OriginHasCountry => at.facts.origin.contains(&recipient.country),
            Cond::SenderIs(c) => italy() == *c,
            Cond::ConsentNamed => at.named,
        }
    }
}

impl Rule {
    fn new(
        id: &str,
        permit: bool,
        action: ActionScope,
        resource: ResourceScope,
        when: Vec<Cond>,
        unless: Vec<Cond>,
    ) -> Self {
        Self { id: id.to_owned(), permit, action, resource, when, unless }
    }

    fn cedar(&self) -> String {
        let effect = if self.permit { "permit" } else { "forbid" };
        let action = match &self.action {
            ActionScope::Any => "action".to_owned(),
            ActionScope::Eq(p) => format!("action == Action::\"{p}\""),
            ActionScope::In(list) => {
                let items: Vec<String> = list.iter().map(|p| format!("Action::\"{p}\"")).collect();
                format!("action in [{}]", items.join(", "))
            }
        };
        let resource = match &self.resource {
            ResourceScope::Any => "resource".to_owned(),
            ResourceScope::Eq(c) => format!("resource == Category::\"{c}\""),
            ResourceScope::In(c) => format!("resource in Category::\"{c}\""),
            ResourceScope::Is => "resource is Category".to_owned(),
        };
        let mut text = format!("@id(\"{}\")\n{effect} (principal, {action}, {resource})", self.id);
        if !self.when.is_empty() {
            let conditions: Vec<String> = self.when.iter().map(Cond::cedar).collect();
            text.push_str(&format!("\nwhen {{ {} }}", conditions.join(" && ")));
        }
        for condition in &self.unless {
            text.push_str(&format!("\nunless {{ {} }}", condition.cedar()));
        }
        text.push_str(";\n");
        text
    }

    fn applies(&self, at: &At) -> bool {
        let purpose = at.input.purpose;
        let action = match &self.action {
            ActionScope::Any => true,
            ActionScope::Eq(p) => *p == purpose,
            ActionScope::In(list) => list.contains(&purpose),
        };
        let resource = match &self.resource {
            ResourceScope::Any | ResourceScope::Is => true,
            ResourceScope::Eq(c) | ResourceScope::In(c) => *c == at.category,
        };
        action && resource && self.when.iter().all(|c| c.holds(at)) && !self.unless.iter().any(|c| c.holds(at))
    }
}

/// What the DPO rules say about one category: allowed (some permit applies and
/// no forbid does), and the permits that apply.
fn dpo_verdict(rules: &[Rule], at: &At) -> (bool, BTreeSet<String>) {
    let permits: BTreeSet<String> = rules.iter().filter(|r| r.permit && r.applies(at)).map(|r| r.id.clone()).collect();
    let forbidden = rules.iter().any(|r| !r.permit && r.applies(at));
    (!permits.is_empty() && !forbidden, permits)
}

/// `config/policies/*.cedar`, rule by rule.
fn default_rules() -> Vec<Rule> {
    use ActionScope as A;
    use Cond as C;
    use DataCategory as D;
    use ResourceScope as R;
    vec![
        Rule::new(
            "return.return_assistance",
            true,
            A::Eq(Purpose::Return),
            R::Any,
            vec![C::Service(Service::ReturnAssistance)],
            vec![],
        ),
        Rule::new(
            "reintegration.reintegration_assistance",
            true,
            A::Eq(Purpose::Reintegration),
            R::Any,
            vec![C::Service(Service::ReintegrationAssistance)],
            vec![C::CategoryIn(vec![D::Health])],
        ),
        Rule::new(
            "reintegration.health_providers",
            true,
            A::Eq(Purpose::Reintegration),
            R::Any,
            vec![C::Kind(RecipientKind::HealthProvider), C::CategoryIn(vec![D::Identity, D::Contact, D::Health])],
            vec![],
        ),
        Rule::new(
            "reintegration.livelihood",
            true,
            A::Eq(Purpose::Reintegration),
            R::Any,
            vec![
                C::Service(Service::Livelihood),
                C::CategoryIn(vec![D::Identity, D::Contact, D::Documents, D::ReintegrationNeeds]),
            ],
            vec![],
        ),
        Rule::new(
            "family_tracing.tracing_services",
            true,
            A::Eq(Purpose::FamilyTracing),
            R::Any,
            vec![C::Service(Service::FamilyTracing)],
            vec![],
        ),
        Rule::new(
            "family_assessment_request.child_protection",
            true,
            A::Eq(Purpose::FamilyAssessmentRequest),
            R::Any,
            vec![C::Service(Service::ChildProtection)],
            vec![],
        ),
        Rule::new(
            "family_assessment_request.tracing_services",
            true,
            A::Eq(Purpose::FamilyAssessmentRequest),
            R::Any,
            vec![C::Service(Service::FamilyTracing)],
            vec![],
        ),
        Rule::new(
            "replies.tracing_services",
            true,
            A::In(vec![Purpose::TracingReply, Purpose::FamilyAssessment]),
            R::Any,
            vec![C::Service(Service::FamilyTracing)],
            vec![],
        ),
        Rule::new(
            "replies.child_protection",
            true,
            A::In(vec![Purpose::TracingReply, Purpose::FamilyAssessment]),
            R::Any,
            vec![C::Service(Service::ChildProtection)],
            vec![],
        ),
        Rule::new("health.never_to_state_actors", false, A::Any, R::Eq(D::Health), vec![C::StateActor], vec![]),
        Rule::new("case_notes.never_to_state_actors", false, A::Any, R::Eq(D::CaseNotes), vec![C::StateActor], vec![]),
        Rule::new(
            "protection.state_actors_only_for_return",
            false,
            A::Any,
            R::Eq(D::Protection),
            vec![C::StateActor],
            vec![C::ActionIs(Purpose::Return)],
        ),
        Rule::new("asylum.only_to_unhcr", false, A::Any, R::Eq(D::Asylum), vec![], vec![C::Kind(RecipientKind::Unhcr)]),
    ]
}

fn permit_all_rules() -> Vec<Rule> {
    vec![Rule::new("test.permit_everything", true, ActionScope::Any, ResourceScope::Any, vec![], vec![])]
}

/// A hand-written set that uses the scope forms a DPO may write. With
/// `resource_in`, two rules are scoped `resource in Category::"x"` instead of
/// `resource == Category::"x"` (see the ignored tests below).
fn scope_forms_rules(resource_in: bool) -> Vec<Rule> {
    let scoped = |category| if resource_in { ResourceScope::In(category) } else { ResourceScope::Eq(category) };
    use ActionScope as A;
    use Cond as C;
    use DataCategory as D;
    use ResourceScope as R;
    vec![
        Rule::new("forms.identity_anywhere", true, A::Any, scoped(D::Identity), vec![], vec![]),
        Rule::new(
            "forms.family_for_tracing_and_return",
            true,
            A::In(vec![Purpose::FamilyTracing, Purpose::Return]),
            R::Eq(D::Family),
            vec![],
            vec![],
        ),
        Rule::new("forms.iom_everything", true, A::Any, R::Is, vec![C::Kind(RecipientKind::Iom)], vec![]),
        Rule::new("forms.named_to_non_state", true, A::Any, R::Any, vec![C::ConsentNamed], vec![C::StateActor]),
        Rule::new("forms.no_health_to_state_actors", false, A::Any, scoped(D::Health), vec![C::StateActor], vec![]),
        Rule::new("forms.contact_only_when_named", false, A::Any, R::Eq(D::Contact), vec![], vec![C::ConsentNamed]),
        Rule::new(
            "forms.no_child_documents_for_return",
            false,
            A::Eq(Purpose::Return),
            R::Eq(D::Documents),
            vec![C::Child],
            vec![],
        ),
    ]
}

fn cond() -> BoxedStrategy<Cond> {
    let profiles: Vec<Profile> = Profile::all().collect();
    prop_oneof![
        3 => prop::sample::select(RecipientKind::ALL).prop_map(Cond::Kind),
        2 => Just(Cond::StateActor),
        2 => country().prop_map(Cond::Country),
        1 => country().prop_map(Cond::State),
        3 => prop::sample::select(Service::ALL).prop_map(Cond::Service),
        2 => prop::sample::subsequence(DataCategory::ALL, 1..=4).prop_map(Cond::CategoryIn),
        1 => prop::sample::select(Purpose::ALL).prop_map(Cond::ActionIs),
        1 => Just(Cond::Child),
        1 => Just(Cond::AsylumLinked),
        1 => Just(Cond::GuardianConsent),
        1 => Just(Cond::BestInterestsDetermined),
        1 => prop::sample::select(profiles).prop_map(Cond::HasProfile),
        1 => Just(Cond::OriginHasCountry),
        1 => prop::sample::select(&["ITA", "NGA"][..]).prop_map(|c| Cond::SenderIs(code(c))),
        1 => Just(Cond::ConsentNamed),
    ]
    .boxed()
}

/// A random rule; `resource in Category::"x"` scopes only with `resource_in`.
fn rule(resource_in: bool) -> BoxedStrategy<Rule> {
    let action = prop_oneof![
        5 => Just(ActionScope::Any),
        4 => prop::sample::select(Purpose::ALL).prop_map(ActionScope::Eq),
        2 => prop::sample::subsequence(Purpose::ALL, 1..=2).prop_map(ActionScope::In),
    ];
    let resource = prop_oneof![
        5 => Just(ResourceScope::Any),
        4 => prop::sample::select(DataCategory::ALL).prop_map(ResourceScope::Eq),
        2 => prop::sample::select(DataCategory::ALL)
            .prop_map(move |c| if resource_in { ResourceScope::In(c) } else { ResourceScope::Eq(c) }),
        1 => Just(ResourceScope::Is),
    ];
    (
        prop::bool::weighted(0.65),
        action,
        resource,
        prop::collection::vec(cond(), 0..3),
        prop::collection::vec(cond(), 0..2),
    )
        .prop_map(|(permit, action, resource, when, unless)| Rule {
            id: String::new(),
            permit,
            action,
            resource,
            when,
            unless,
        })
        .boxed()
}

fn compile(name: &str, rules: &[Rule]) -> DataProtectionPolicy {
    let text: String = rules.iter().map(Rule::cedar).collect::<Vec<_>>().join("\n");
    let source = PolicySource { name: format!("{name}.cedar"), text };
    match DataProtectionPolicy::compile(std::slice::from_ref(&source)) {
        Ok(policy) => policy,
        Err(error) => panic!("{name} does not compile: {error}\n{}", source.text),
    }
}

struct PolicyUnderTest {
    name: String,
    policy: DataProtectionPolicy,
    rules: Vec<Rule>,
}

const RANDOM_POLICY_SETS: usize = 4;

/// A permit on every category, with at most one condition, so that random
/// sets allow something often enough to be worth checking.
fn broad_permit() -> BoxedStrategy<Rule> {
    let action = prop_oneof![Just(ActionScope::Any), prop::sample::select(Purpose::ALL).prop_map(ActionScope::Eq)];
    (action, prop::collection::vec(cond(), 0..2))
        .prop_map(|(action, when)| Rule {
            id: String::new(),
            permit: true,
            action,
            resource: ResourceScope::Any,
            when,
            unless: Vec::new(),
        })
        .boxed()
}

/// `count` random policy sets, generated deterministically so that a failure
/// names a set that exists on the next run too, and compiled once.
fn random_policies(prefix: &str, count: usize, resource_in: bool) -> Vec<PolicyUnderTest> {
    let mut runner = TestRunner::deterministic();
    let set = (broad_permit(), prop::collection::vec(rule(resource_in), 2..7));
    (0..count)
        .map(|index| {
            let (first, rest) = set.new_tree(&mut runner).unwrap().current();
            let mut rules = vec![first];
            rules.extend(rest);
            for (n, rule) in rules.iter_mut().enumerate() {
                rule.id = format!("{prefix}.{index}.{n}");
            }
            let name = format!("{prefix}-{index}");
            PolicyUnderTest { policy: compile(&name, &rules), name, rules }
        })
        .collect()
}

/// Every policy set the properties run against.
fn policies() -> &'static [PolicyUnderTest] {
    static POLICIES: OnceLock<Vec<PolicyUnderTest>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let forms = scope_forms_rules(false);
        let mut all = vec![
            PolicyUnderTest { name: "default".into(), policy: default_policy().clone(), rules: default_rules() },
            PolicyUnderTest {
                name: "permit-all".into(),
                policy: permit_all_policy().clone(),
                rules: permit_all_rules(),
            },
            PolicyUnderTest { name: "scope-forms".into(), policy: compile("scope-forms", &forms), rules: forms },
        ];
        all.extend(random_policies("random", RANDOM_POLICY_SETS, false));
        all
    })
}

/// Policy sets with `resource in Category::"x"` scopes, for the ignored property.
fn policies_with_resource_in() -> &'static [PolicyUnderTest] {
    static POLICIES: OnceLock<Vec<PolicyUnderTest>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let forms = scope_forms_rules(true);
        let mut all = vec![PolicyUnderTest {
            name: "scope-forms-in".into(),
            policy: compile("scope-forms-in", &forms),
            rules: forms,
        }];
        all.extend(random_policies("random-in", 2, true));
        all
    })
}

// ---------------------------------------------------------------------------
// Independent models of the case facts, consent coverage and the decision
// ---------------------------------------------------------------------------

struct Facts {
    child: bool,
    asylum_linked: bool,
    by_guardian: bool,
    determined: bool,
    recommends_return: bool,
    /// The determination recommends the child rejoin the family (return, or reunification elsewhere).
    favours_family: bool,
    profiles: BTreeSet<&'static str>,
    origin: BTreeSet<CountryCode>,
}

fn model_facts(input: &Input) -> Facts {
    let case = &input.case;
    let child_profile = case.protection.as_ref().is_some_and(|p| {
        p.profiles
            .iter()
            .any(|x| matches!(x, ProtectionProfile::UnaccompaniedChild | ProtectionProfile::SeparatedChild))
    });
    let under_age = case
        .identity
        .as_ref()
        .and_then(|i| i.date_of_birth)
        .is_some_and(|born| born.checked_add_months(Months::new(12 * 18)).unwrap() > today());
    let mut origin = BTreeSet::new();
    if let Some(identity) = &case.identity {
        origin.extend(identity.nationalities.iter().copied());
        origin.extend(identity.former_habitual_residence.iter().map(|p| p.country));
    }
    if let Some(asylum) = &case.asylum {
        origin.extend(asylum.feared_return.iter().copied());
    }
    let mut profiles = BTreeSet::new();
    profiles.extend(case.protection.iter().flat_map(|p| p.profiles.iter().map(|x| x.as_str())));
    profiles.extend(case.asylum.iter().flat_map(|a| a.status.iter().map(|x| x.as_str())));
    let determination = case.child_safeguards.as_ref().and_then(|c| c.best_interests_determination);
    Facts {
        child: child_profile || under_age,
        asylum_linked: case
            .asylum
            .as_ref()
            .is_some_and(|a| !a.status.is_empty() || !a.applications.is_empty() || !a.feared_return.is_empty()),
        by_guardian: matches!(input.consent.given_by, ConsentGiver::Guardian { .. }),
        determined: matches!(determination, Some(BestInterests::Completed { .. })),
        recommends_return: matches!(
            determination,
            Some(BestInterests::Completed { recommendation: Some(DurableSolution::ReturnToCountryOfOrigin), .. })
        ),
        favours_family: matches!(
            determination,
            Some(BestInterests::Completed {
                recommendation: Some(DurableSolution::ReturnToCountryOfOrigin | DurableSolution::FamilyReunificationElsewhere),
                ..
            })
        ),
        profiles,
        origin,
    }
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value.and_then(Value::as_array).map_or_else(Vec::new, |items| items.iter().filter_map(Value::as_str).collect())
}

fn time(value: &Value) -> DateTime<Utc> {
    serde_json::from_value(value.clone()).unwrap()
}

/// A selector's country grants to organisations that both sit in that
/// country and act for it (never to a foreign consulate there), and refuses
/// organisations that sit in it or act for it.
fn selector_matches(selector: &Value, recipient: &Recipient, refusing: bool) -> bool {
    let field = |name: &str| selector.get(name).and_then(Value::as_str);
    let (sits, acts) = (recipient.country.as_str(), recipient.state());
    field("organisation").is_none_or(|o| o == recipient.id.as_str())
        && field("kind").is_none_or(|k| k == recipient.kind.as_str())
        && field("country")
            .is_none_or(|c| if refusing { c == sits || c == acts.as_str() } else { c == sits && c == acts.as_str() })
}

/// Consent coverage read from the consent's JSON form: `(granted, named)`.
/// Withdrawal ends everything; a refusal (empty fields meaning "any") beats
/// any grant; a scope grants from `valid_from` (or the time consent was
/// given) until just before `valid_until`; `all` never covers `asylum` or
/// `case_notes`; `named` when a scope in force lists the category.
fn model_coverage(input: &Input, category: DataCategory) -> (bool, bool) {
    let json = serde_json::to_value(&input.consent).unwrap();
    if json.get("withdrawn_at").is_some_and(|w| !w.is_null()) {
        return (false, false);
    }
    let recipient = &input.recipient;
    let (purpose, name) = (input.purpose.as_str(), category.as_str());
    let listed_or_any = |list: Vec<&str>, item: &str| list.is_empty() || list.contains(&item);
    let refusals = json.get("refusals").and_then(Value::as_array).cloned().unwrap_or_default();
    let refused = refusals.iter().any(|r| {
        let selectors = r.get("recipients").and_then(Value::as_array).cloned().unwrap_or_default();
        listed_or_any(strings(r.get("purposes")), purpose)
            && listed_or_any(strings(r.get("categories")), name)
            && (selectors.is_empty() || selectors.iter().any(|s| selector_matches(s, recipient, true)))
    });
    if refused {
        return (false, false);
    }
    let given_at = time(&json["given_at"]);
    let mut granted = (false, false);
    for scope in json["scopes"].as_array().unwrap() {
        let categories = &scope["categories"];
        let listed = strings(Some(categories)).contains(&name);
        let covers = listed
            || (categories.as_str() == Some("all")
                && !matches!(category, DataCategory::Asylum | DataCategory::CaseNotes));
        let from = scope.get("valid_from").map_or(given_at, time);
        let until = time(&scope["valid_until"]);
        let applies = strings(scope.get("purposes")).contains(&purpose)
            && covers
            && scope["recipients"].as_array().unwrap().iter().any(|s| selector_matches(s, recipient, false))
            && from <= now()
            && now() < until;
        if applies {
            granted = (true, granted.1 || listed);
        }
    }
    granted
}

/// The part of a category the purpose baseline keeps, from the case's JSON.
fn model_projection(case_json: &Value, category: DataCategory, fields: Fields) -> Option<Value> {
    fn cut(value: &Value, fields: Fields) -> Option<Value> {
        match value {
            Value::Object(map) => {
                let kept: serde_json::Map<String, Value> =
                    map.iter().filter(|(k, _)| fields.includes(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
                (!kept.is_empty()).then_some(Value::Object(kept))
            }
            Value::Array(items) => {
                let kept: Vec<Value> = items.iter().filter_map(|item| cut(item, fields)).collect();
                (!kept.is_empty()).then_some(Value::Array(kept))
            }
            Value::Null => None,
            scalar => (fields == Fields::All).then(|| scalar.clone()),
        }
    }
    cut(case_json.get(category.as_str())?, fields)
}

/// What the model says goes: each category with its projection and the permits
/// that allow it; and whether the decision is an allow.
struct Expected {
    allow: bool,
    sendable: BTreeMap<DataCategory, (Value, BTreeSet<String>)>,
    /// The rule requiring end-to-end sealing; no policy set here has DPO sealing rules.
    end_to_end: Option<&'static str>,
}

fn model_decision(input: &Input, rules: &[Rule]) -> Expected {
    let facts = model_facts(input);
    let case_json = serde_json::to_value(&input.case).unwrap();
    let (sits, acts) = input.origin_contact();
    let state_actor = input.state_actor();
    let mut sendable = BTreeMap::new();
    for &category in DataCategory::ALL {
        let Some(fields) = needed_fields(input.purpose, category) else { continue };
        let Some(projection) = model_projection(&case_json, category, fields) else { continue };
        let (covered, named) = model_coverage(input, category);
        // The built-in rules, each as the condition under which it withholds.
        let withheld_by_built_in_rule = [
            !covered,
            category == DataCategory::CaseNotes && !named,
            facts.asylum_linked && state_actor && (sits || acts),
            category == DataCategory::Asylum && (sits || acts),
            facts.child && !facts.by_guardian,
            facts.child && input.purpose == Purpose::Return && !facts.recommends_return,
            // (d) An answer to the family's side says where a child is only with
            // the guardian's consent and a determination for the family.
            matches!(input.purpose, Purpose::TracingReply | Purpose::FamilyAssessment)
                && facts.child
                && matches!(category, DataCategory::Contact | DataCategory::ChildSafeguards | DataCategory::Family | DataCategory::CaseNotes)
                && !(facts.by_guardian && facts.favours_family),
        ];
        let built_in_ok = !withheld_by_built_in_rule.contains(&true);
        let at = At { input, facts: &facts, category, named };
        let (allowed, permits) = dpo_verdict(rules, &at);
        if built_in_ok && allowed {
            sendable.insert(category, (projection, permits));
        }
    }
    // ...and what says where the child is goes only with the determination
    // that lets it, so that the receiving gateway can check it too.
    if matches!(input.purpose, Purpose::TracingReply | Purpose::FamilyAssessment)
        && facts.child
        && !sendable.contains_key(&DataCategory::ChildSafeguards)
    {
        for category in [DataCategory::Contact, DataCategory::Family, DataCategory::CaseNotes] {
            sendable.remove(&category);
        }
    }
    let end_to_end = input.end_to_end_by_builtin().then_some("builtin.asylum_end_to_end");
    let reachable = end_to_end.is_none() || input.recipient.has_end_to_end_key();
    let allow = reachable && required_categories(input.purpose).iter().all(|c| sendable.contains_key(c));
    Expected { allow, sendable, end_to_end }
}

// ---------------------------------------------------------------------------
// Helpers for the leak property
// ---------------------------------------------------------------------------

fn string_leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| string_leaves(v, out)),
        Value::Object(map) => map.values().for_each(|v| string_leaves(v, out)),
        _ => {}
    }
}

/// Every string value of the case and the consent except closed-vocabulary
/// words (all lower-case letters and `_`, such as `female` or `return`, which
/// a decision names legitimately): names, places, phone numbers, notes,
/// document numbers, dates, times, country codes and organisation ids.
fn personal_values(input: &Input) -> Vec<String> {
    let mut leaves = Vec::new();
    string_leaves(&serde_json::to_value(&input.case).unwrap(), &mut leaves);
    string_leaves(&serde_json::to_value(&input.consent).unwrap(), &mut leaves);
    leaves.retain(|s| !s.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    leaves.sort();
    leaves.dedup();
    leaves
}

fn assert_no_leak(decision: &Decision, values: &[String], policy: &str) -> Result<(), TestCaseError> {
    let json = serde_json::to_string(decision).unwrap();
    let debug = format!("{decision:?}");
    let mut reasons: Vec<&str> = decision.deny_reasons().iter().map(|r| r.as_str()).collect();
    reasons.extend(decision.withheld().values().flatten().map(|w| w.reason.as_str()));
    for value in values {
        let escaped = serde_json::to_string(value).unwrap();
        let escaped = escaped.trim_matches('"');
        prop_assert!(
            !json.contains(value.as_str()) && !json.contains(escaped),
            "{policy}: the decision repeats {value:?}: {json}"
        );
        if value.starts_with("Qj") || value.starts_with("+Qj") {
            prop_assert!(
                !debug.contains(value.as_str()) && !debug.contains(escaped),
                "{policy}: Debug repeats {value:?}"
            );
        }
        for reason in &reasons {
            prop_assert!(!reason.contains(value.as_str()), "{policy}: reason {reason} holds {value:?}");
        }
    }
    prop_assert!(!json.contains("Qj"), "{policy}: a generated personal value reached the decision: {json}");
    Ok(())
}

fn assert_matches_model(input: &Input, p: &PolicyUnderTest) -> Result<(), TestCaseError> {
    let (decision, payload) = input.decide(&p.policy);
    let expected = model_decision(input, &p.rules);
    prop_assert_eq!(
        decision.is_allow(),
        expected.allow,
        "{}: allow; sendable per model {:?}; decision {}",
        p.name,
        expected.sendable.keys().collect::<Vec<_>>(),
        serde_json::to_string(&decision).unwrap()
    );
    prop_assert_eq!(decision.end_to_end_required_by(), expected.end_to_end, "{}: end to end", p.name);
    if expected.allow {
        let categories: BTreeSet<DataCategory> = expected.sendable.keys().copied().collect();
        prop_assert_eq!(decision.sent_categories(), categories, "{}: sent", p.name);
        for (category, (projection, permits)) in &expected.sendable {
            prop_assert_eq!(payload.get(*category), Some(projection), "{}: {} payload", p.name, category);
            let recorded: BTreeSet<String> = decision.sent()[category].permitted_by.iter().cloned().collect();
            prop_assert_eq!(&recorded, permits, "{}: {} permits", p.name, category);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// A decision is its facts and a policy: the facts, kept (serialised) and
    /// read back, decide as the submission did under every policy, and the
    /// payload holds exactly the categories sent. A replay of a past decision
    /// under another policy version rests on this.
    #[test]
    fn stored_facts_decide_as_the_submission_did(input in any_input()) {
        let (facts, _) = gather(&input.case, &input.consent, italy(), Some(&input.recipient), input.purpose, now());
        let stored = serde_json::to_string(&facts).unwrap();
        let read_back: DecisionFacts = serde_json::from_str(&stored).unwrap();
        prop_assert_eq!(&read_back, &facts);
        for p in policies() {
            let (decision, payload) = input.decide(&p.policy);
            prop_assert_eq!(&decide_from(&read_back, &p.policy), &decision, "{}", p.name);
            let carried: BTreeSet<DataCategory> = payload.to_json().as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect();
            prop_assert_eq!(carried, decision.sent().keys().copied().collect::<BTreeSet<_>>(), "{}", p.name);
        }
    }

    /// 1. Nothing about an asylum-linked person reaches a state actor of any
    /// origin state, whether it sits there or acts for it, under any policy.
    #[test]
    fn asylum_linked_cases_never_reach_a_state_actor_of_an_origin_state(
        input in origin_input(RecipientKind::ALL, true)
    ) {
        let (sits, acts) = input.origin_contact();
        prop_assume!(model_facts(&input).asylum_linked && input.state_actor() && (sits || acts));
        for p in policies() {
            let (decision, payload) = input.decide(&p.policy);
            prop_assert!(!decision.is_allow(), "{}: allowed", p.name);
            prop_assert!(decision.sent().is_empty(), "{}: sent {:?}", p.name, decision.sent_categories());
            prop_assert!(payload.is_empty() && payload.to_json() == serde_json::json!({}), "{}: payload", p.name);
            let reasons = decision.deny_reasons();
            prop_assert!(
                reasons.contains(&ReasonCode::AsylumFirewall) || reasons.contains(&ReasonCode::RequiredCategoryMissing),
                "{}: {:?}", p.name, reasons
            );
        }
    }

    /// 2. The `asylum` category never goes to a recipient in an origin state,
    /// nor to a state actor acting for one.
    #[test]
    fn the_asylum_category_never_reaches_an_origin_state(
        input in prop_oneof![origin_input(RecipientKind::ALL, false), asylum_to_origin_input()]
    ) {
        let (sits, acts) = input.origin_contact();
        prop_assume!(sits || acts);
        for p in policies() {
            let (decision, payload) = input.decide(&p.policy);
            prop_assert!(!decision.sent().contains_key(&DataCategory::Asylum), "{}: asylum sent", p.name);
            prop_assert!(payload.get(DataCategory::Asylum).is_none(), "{}: asylum in payload", p.name);
            prop_assert!(payload.to_json().get("asylum").is_none(), "{}: asylum in payload JSON", p.name);
        }
    }

    /// 3. Sent ⊆ consent coverage at now ∩ what a DPO permit allows (and no DPO
    /// forbid forbids) ∩ the purpose baseline; each sent category records the
    /// permits that allowed it and the baseline fields.
    #[test]
    fn sent_categories_are_within_consent_policy_and_baseline(input in any_input()) {
        let facts = model_facts(&input);
        for p in policies() {
            let (decision, _) = input.decide(&p.policy);
            let dpo = p.policy.dpo_policies();
            for (&category, sent) in decision.sent() {
                let coverage = input.coverage(category);
                prop_assert!(matches!(coverage, Coverage::Granted { .. }), "{}: {category} sent with coverage {coverage:?}", p.name);
                let named = matches!(coverage, Coverage::Granted { named: true, .. });
                let (allowed, permits) = dpo_verdict(&p.rules, &At { input: &input, facts: &facts, category, named });
                prop_assert!(allowed, "{}: {category} sent though the DPO rules do not allow it", p.name);
                let baseline = needed_fields(input.purpose, category);
                prop_assert!(baseline.is_some(), "{}: {category} is outside the {} baseline", p.name, input.purpose);
                prop_assert_eq!(Some(sent.fields), baseline, "{}: {} fields", p.name, category);
                prop_assert!(!sent.permitted_by.is_empty(), "{}: {category} sent without a permit", p.name);
                for id in &sent.permitted_by {
                    prop_assert_eq!(dpo.get(id).copied(), Some("permit"), "{}: {} permitted by {}", p.name, category, id);
                    prop_assert!(permits.contains(id), "{}: {category} credited to {id}, which does not apply", p.name);
                }
            }
        }
    }

    /// 4. Withdrawn consent always denies, and so does consent whose every
    /// scope has ended (now ≥ valid_until).
    #[test]
    fn withdrawn_or_expired_consent_always_denies(input in any_input()) {
        let withdrawn = input.consent.withdrawn_at.is_some();
        let expired = input.consent.scopes().iter().all(|s| now() >= s.valid_until());
        prop_assume!(withdrawn || expired);
        for p in policies() {
            let (decision, payload) = input.decide(&p.policy);
            prop_assert!(!decision.is_allow(), "{}: allowed (withdrawn {withdrawn}, expired {expired})", p.name);
            prop_assert!(decision.sent().is_empty() && payload.is_empty(), "{}: something sent", p.name);
            if withdrawn {
                for (category, reasons) in decision.withheld() {
                    let consulted = reasons.iter().any(|w| w.reason != ReasonCode::NotNeededForPurpose);
                    prop_assert!(!consulted || reasons.iter().any(|w| w.reason == ReasonCode::ConsentWithdrawn),
                        "{}: {category} withheld for {reasons:?}, not for the withdrawal", p.name);
                }
            }
        }
    }

    /// 5. Case notes leave only when a consent scope in force for this purpose
    /// and recipient lists `case_notes` by name.
    #[test]
    fn case_notes_leave_only_when_a_scope_names_them(input in any_input()) {
        for p in policies() {
            let (decision, payload) = input.decide(&p.policy);
            if decision.sent().contains_key(&DataCategory::CaseNotes) || payload.get(DataCategory::CaseNotes).is_some() {
                prop_assert_eq!(model_coverage(&input, DataCategory::CaseNotes), (true, true), "{}: notes sent", p.name);
                let coverage = input.coverage(DataCategory::CaseNotes);
                prop_assert!(matches!(coverage, Coverage::Granted { named: true, .. }), "{}: notes sent with {:?}", p.name, coverage);
            }
        }
    }

    /// 6. The payload holds exactly the sent categories, and within each only
    /// keys of the purpose baseline (for `documents`, in every entry), with the
    /// case's own values.
    #[test]
    fn the_payload_holds_only_sent_categories_and_baseline_fields(input in any_input()) {
        let case_json = serde_json::to_value(&input.case).unwrap();
        for p in policies() {
            let (decision, payload) = input.decide(&p.policy);
            let json = payload.to_json();
            let object = json.as_object().unwrap();
            let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
            let sent: BTreeSet<&str> = decision.sent().keys().map(|c| c.as_str()).collect();
            prop_assert_eq!(&keys, &sent, "{}: payload categories", p.name);
            for (name, value) in object {
                let category: DataCategory = name.parse().unwrap();
                let fields = needed_fields(input.purpose, category);
                prop_assert!(fields.is_some(), "{}: {name} not in the baseline", p.name);
                let fields = fields.unwrap();
                let original = &case_json[name.as_str()];
                let entries: Vec<(&Value, &Value)> = match (value, category) {
                    (Value::Array(items), DataCategory::Documents) => {
                        prop_assert!(original.as_array().is_some_and(|o| o.len() >= items.len()));
                        // Entries keep their order; empty ones are dropped.
                        let originals: Vec<&Value> = original.as_array().unwrap().iter()
                            .filter(|o| o.as_object().unwrap().keys().any(|k| fields.includes(k))).collect();
                        prop_assert_eq!(originals.len(), items.len(), "{}: documents entries", p.name);
                        items.iter().zip(originals).collect()
                    }
                    (Value::Array(items), DataCategory::CaseNotes) => {
                        prop_assert_eq!(value, original, "{}: notes changed", p.name);
                        prop_assert!(items.iter().all(Value::is_string));
                        Vec::new()
                    }
                    (Value::Object(_), _) => vec![(value, original)],
                    _ => {
                        prop_assert!(false, "{}: {name} has an unexpected shape: {value}", p.name);
                        Vec::new()
                    }
                };
                for (entry, original) in entries {
                    let entry = entry.as_object().unwrap();
                    prop_assert!(!entry.is_empty(), "{}: empty {name} entry", p.name);
                    for (key, kept) in entry {
                        prop_assert!(fields.includes(key), "{}: {name}.{key} is outside the {} baseline", p.name, input.purpose);
                        prop_assert_eq!(Some(kept), original.get(key), "{}: {}.{} altered", p.name, name, key);
                    }
                }
            }
        }
    }

    /// 7. A child's consent needs a guardian; a child's return needs a completed
    /// best-interests determination recommending return.
    #[test]
    fn children_need_guardian_consent_and_a_determination_recommending_return(input in any_input()) {
        let today = now().date_naive();
        prop_assume!(input.case.is_child(today));
        let recommends_return = matches!(
            input.case.child_safeguards.as_ref().and_then(|c| c.best_interests_determination),
            Some(BestInterests::Completed { recommendation: Some(DurableSolution::ReturnToCountryOfOrigin), .. })
        );
        for p in policies() {
            let (decision, payload) = input.decide(&p.policy);
            if !input.consent.is_by_guardian() {
                prop_assert!(!decision.is_allow() && payload.is_empty(), "{}: child allowed without a guardian", p.name);
            }
            if input.purpose == Purpose::Return && !recommends_return {
                prop_assert!(!decision.is_allow() && payload.is_empty(), "{}: child's return allowed without a determination for it", p.name);
            }
        }
    }

    /// 8. Reason codes and the serialized decision never carry a value from the
    /// case or the consent.
    #[test]
    fn decisions_never_contain_a_value_from_the_case_or_consent(input in any_input()) {
        let values = personal_values(&input);
        for p in policies() {
            let (decision, _) = input.decide(&p.policy);
            assert_no_leak(&decision, &values, &p.name)?;
        }
        // An unknown recipient is a deny, and tells nothing either.
        let unknown = decide(&input.case, &input.consent, italy(), None, input.purpose, default_policy(), now());
        assert_no_leak(&unknown, &values, "unknown recipient")?;
    }

    /// 9. Allow ⇔ no deny reasons; an allow sends every required category; a
    /// deny sends nothing; `decide` + `minimise` equals the one-pass path.
    #[test]
    fn allow_and_deny_are_consistent(input in any_input()) {
        for p in policies() {
            let (decision, payload) = input.decide(&p.policy);
            prop_assert_eq!(decision.is_allow(), decision.deny_reasons().is_empty(), "{}", p.name);
            if decision.is_allow() {
                prop_assert!(!decision.sent().is_empty(), "{}: allow sends nothing", p.name);
                for required in required_categories(input.purpose) {
                    prop_assert!(decision.sent().contains_key(required), "{}: allow without {}", p.name, required);
                }
                prop_assert!(!payload.is_empty(), "{}: allow with an empty payload", p.name);
            } else {
                prop_assert!(decision.sent().is_empty(), "{}: deny sends {:?}", p.name, decision.sent_categories());
                prop_assert!(payload.is_empty(), "{}: deny with a payload", p.name);
            }
            prop_assert_eq!(decision.purpose(), input.purpose);
            prop_assert_eq!(decision.policy_version(), p.policy.version());
            let separate = decide(&input.case, &input.consent, italy(), Some(&input.recipient), input.purpose, &p.policy, now());
            prop_assert_eq!(&separate, &decision, "{}: decide differs from decide_and_minimise", p.name);
            prop_assert_eq!(&minimise(&input.case, &separate), &payload, "{}: minimise differs", p.name);
        }
        let unknown = decide(&input.case, &input.consent, italy(), None, input.purpose, default_policy(), now());
        prop_assert!(!unknown.is_allow());
        prop_assert!(unknown.deny_reasons().contains(&ReasonCode::RecipientUnknown));
    }

    /// A decision's record serialises as the decision itself, and reads back
    /// from what was stored: an answer rendered again from the store is the
    /// answer first given.
    #[test]
    fn a_decision_record_is_the_decision_as_stored(input in any_input()) {
        let unknown = decide(&input.case, &input.consent, italy(), None, input.purpose, default_policy(), now());
        for decision in policies().iter().map(|p| input.decide(&p.policy).0).chain([unknown]) {
            let stored = serde_json::to_string(&decision).unwrap();
            let record = referral_gateway::domain::decision::DecisionRecord::from(&decision);
            prop_assert_eq!(serde_json::to_string(&record).unwrap(), stored.clone());
            let read: referral_gateway::domain::decision::DecisionRecord = serde_json::from_str(&stored).unwrap();
            prop_assert_eq!(&read, &record);
            prop_assert_eq!(read.sent_categories(), decision.sent_categories());
        }
    }

    /// The whole decision equals an independent model: consent read from JSON,
    /// the built-in rules, the DPO rules in Rust and the baseline. Catches
    /// over-restriction as well as leaks, and checks the recorded permits.
    #[test]
    fn decisions_match_an_independent_model(input in any_input()) {
        prop_assert_eq!(input.case.is_child(today()), model_facts(&input).child, "is_child");
        prop_assert_eq!(input.recipient.is_state_actor(), input.state_actor(), "is_state_actor");
        for p in policies() {
            assert_matches_model(&input, p)?;
        }
    }

    /// 10. An asylum-linked case reaches a recipient sitting in, or acting
    /// for, one of the person's origin states (state actor or not) only sealed
    /// end to end: never an allow unless the recipient publishes a key, and
    /// every decision, allow or deny, names the built-in rule, under any policy.
    #[test]
    fn asylum_linked_cases_reach_an_origin_state_only_sealed_end_to_end(
        input in prop_oneof![origin_input(NON_STATE_KINDS, true), origin_input(RecipientKind::ALL, true)]
    ) {
        prop_assume!(input.end_to_end_by_builtin());
        let has_key = input.recipient.has_end_to_end_key();
        for p in policies() {
            let (decision, payload) = input.decide(&p.policy);
            prop_assert_eq!(decision.end_to_end_required_by(), Some("builtin.asylum_end_to_end"), "{}", p.name);
            prop_assert!(!decision.is_allow() || has_key, "{}: allowed without an end-to-end key", p.name);
            if !has_key {
                prop_assert!(decision.sent().is_empty() && payload.is_empty(), "{}: sent without a key", p.name);
            }
            // The key decides whether it can go, nothing else: the same
            // recipient with a key is decided the same. The missing key is
            // named only when nothing else would deny (a key would not help).
            let keyed = Input { recipient: input.recipient.clone().with_end_to_end_key(true), ..input.clone() };
            let (with_key, _) = keyed.decide(&p.policy);
            if has_key || !with_key.is_allow() {
                prop_assert_eq!(decision.deny_reasons(), with_key.deny_reasons(), "{}", p.name);
            } else {
                prop_assert_eq!(decision.deny_reasons(), &BTreeSet::from([ReasonCode::RecipientKeyRequired]), "{}", p.name);
            }
            prop_assert_eq!(with_key.withheld(), decision.withheld(), "{}", p.name);
        }
    }

    /// Consent coverage agrees with the model read from the consent's JSON.
    #[test]
    fn consent_coverage_matches_the_model(input in input()) {
        for &category in DataCategory::ALL {
            let coverage = input.coverage(category);
            let modelled = model_coverage(&input, category);
            let actual = match coverage {
                Coverage::Granted { named, .. } => (true, named),
                _ => (false, false),
            };
            prop_assert_eq!(actual, modelled, "{} {:?}", category, coverage);
            if input.consent.withdrawn_at.is_some() {
                prop_assert_eq!(coverage, Coverage::Withdrawn);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The properties above must not hold vacuously
// ---------------------------------------------------------------------------

#[test]
fn the_default_rules_mirror_the_shipped_policy() {
    let shipped = default_policy().dpo_policies();
    let mirrored: BTreeMap<String, &str> =
        default_rules().into_iter().map(|r| (r.id, if r.permit { "permit" } else { "forbid" })).collect();
    assert_eq!(shipped, mirrored, "config/policies changed: update default_rules() in tests/domain/properties.rs");
}

#[test]
fn the_generators_reach_the_interesting_regions() {
    let mut runner = TestRunner::deterministic();
    let strategy = any_input();
    let mut allows: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut firewalled, mut origin_contact, mut children, mut child_allows) = (0, 0, 0, 0);
    let (mut withdrawn, mut expired, mut notes_sent, mut asylum_sent) = (0, 0, 0, 0);
    let (mut sealed, mut sealed_allows, mut key_denies) = (0, 0, 0);
    for _ in 0..300 {
        let input = strategy.new_tree(&mut runner).unwrap().current();
        let facts = model_facts(&input);
        let (sits, acts) = input.origin_contact();
        origin_contact += usize::from(sits || acts);
        firewalled += usize::from(facts.asylum_linked && input.state_actor() && (sits || acts));
        children += usize::from(facts.child);
        withdrawn += usize::from(input.consent.withdrawn_at.is_some());
        expired += usize::from(input.consent.scopes().iter().all(|s| now() >= s.valid_until()));
        sealed += usize::from(input.end_to_end_by_builtin());
        for p in policies() {
            let (decision, _) = input.decide(&p.policy);
            key_denies += usize::from(decision.deny_reasons() == &BTreeSet::from([ReasonCode::RecipientKeyRequired]));
            sealed_allows += usize::from(decision.is_allow() && input.end_to_end_by_builtin());
            if decision.is_allow() {
                *allows.entry(p.name.as_str()).or_default() += 1;
                child_allows += usize::from(facts.child);
                notes_sent += usize::from(decision.sent().contains_key(&DataCategory::CaseNotes));
                asylum_sent += usize::from(decision.sent().contains_key(&DataCategory::Asylum));
            }
        }
    }
    println!(
        "allows {allows:?}; firewalled {firewalled}, origin contact {origin_contact}, children {children} \
         (allowed {child_allows}), withdrawn {withdrawn}, expired {expired}, notes sent {notes_sent}, asylum sent {asylum_sent}, \
         sealed end to end {sealed} (allowed {sealed_allows}, denied for the key alone {key_denies})"
    );
    for p in policies() {
        let count = allows.get(p.name.as_str()).copied().unwrap_or(0);
        let floor = if p.name.starts_with("random") { 1 } else { 10 };
        assert!(count >= floor, "policy {} allowed only {count} of 300", p.name);
    }
    assert!(firewalled >= 20, "only {firewalled} firewall cases");
    assert!(origin_contact >= 60, "only {origin_contact} recipients in or for an origin state");
    assert!(children >= 60 && child_allows >= 5, "children {children}, allowed {child_allows}");
    assert!(withdrawn >= 20 && expired >= 20, "withdrawn {withdrawn}, expired {expired}");
    assert!(notes_sent >= 3 && asylum_sent >= 3, "notes sent {notes_sent}, asylum sent {asylum_sent}");
    assert!(sealed >= 40 && sealed_allows >= 5 && key_denies >= 5, "sealed {sealed}, allowed {sealed_allows}, key denies {key_denies}");
}

// ---------------------------------------------------------------------------
// Regressions: minimal cases of bugs the properties found
// ---------------------------------------------------------------------------

/// An adult Gambian with identity, contact, documents and health data.
fn plain_case() -> Case {
    Case {
        identity: Some(Identity {
            given_names: Some(ShortText::parse("QjGivenRegression").unwrap()),
            date_of_birth: NaiveDate::from_ymd_opt(1990, 4, 2),
            nationalities: [code("GMB")].into(),
            ..Identity::default()
        }),
        contact: Some(Contact { phone: Some(ShortText::parse("+Qj 39 1234567").unwrap()), ..Contact::default() }),
        documents: vec![Document {
            document_type: DocumentType::Passport,
            number: Some(ShortText::parse("QjDoc7654321").unwrap()),
            issuing_country: Some(code("GMB")),
            expiry: None,
        }],
        health: Some(Health {
            conditions: vec![ShortText::parse("QjConditionRegression").unwrap()],
            ..Health::default()
        }),
        ..Case::default()
    }
}

/// The subject consents to every category, named, for every purpose, to `recipient`.
fn full_consent(recipient: &Recipient) -> Consent {
    let scope = Scope::new(
        Purpose::ALL.iter().copied().collect(),
        CategorySelection::Listed(DataCategory::ALL.iter().copied().collect()),
        vec![RecipientSelector::new(Some(recipient.id.clone()), None, None).unwrap()],
        None,
        minutes_from_now(30 * DAY),
    )
    .unwrap();
    Consent {
        given_by: ConsentGiver::Subject {},
        method: ConsentMethod::Written,
        given_at: minutes_from_now(-DAY),
        informed_in_language: None,
        scopes: vec![scope],
        refusals: Vec::new(),
        withdrawn_at: None,
    }
}

/// An NGO in Gambia offering reintegration, fully consented, for reintegration.
fn plain_input() -> Input {
    let recipient = Recipient::new(
        OrgId::parse("qj-org-one").unwrap(),
        code("GMB"),
        RecipientKind::Ngo,
        false,
        [Service::ReintegrationAssistance].into(),
    );
    Input {
        case: plain_case(),
        consent: full_consent(&recipient),
        recipient,
        listed: false,
        purpose: Purpose::Reintegration,
    }
}

#[test]
fn regression_a_permit_scoped_resource_in_one_category_allows_only_that_category() {
    let rules = [Rule::new(
        "reg.identity_only",
        true,
        ActionScope::Any,
        ResourceScope::In(DataCategory::Identity),
        vec![],
        vec![],
    )];
    let policy = compile("regression-permit-in", &rules);
    let input = plain_input();
    let (decision, payload) = input.decide(&policy);
    assert_eq!(
        decision.sent_categories(),
        [DataCategory::Identity].into(),
        "{}",
        serde_json::to_string(&decision).unwrap()
    );
    assert_eq!(payload.categories().collect::<Vec<_>>(), [DataCategory::Identity]);
}

#[test]
fn regression_a_forbid_scoped_resource_in_one_category_withholds_it() {
    let rules = [
        Rule::new("reg.everything", true, ActionScope::Any, ResourceScope::Any, vec![], vec![]),
        Rule::new("reg.never_health", false, ActionScope::Any, ResourceScope::In(DataCategory::Health), vec![], vec![]),
    ];
    let policy = compile("regression-forbid-in", &rules);
    let input = plain_input();
    let (decision, payload) = input.decide(&policy);
    assert!(decision.is_allow());
    assert!(!decision.sent().contains_key(&DataCategory::Health), "{}", serde_json::to_string(&decision).unwrap());
    assert!(payload.get(DataCategory::Health).is_none());
}

proptest! {
    #![proptest_config(config())]

    /// The model property again, with DPO rules scoped `resource in
    /// Category::"x"` (valid Cedar, accepted by `policy check`). Fails: see
    /// the two regression tests above.
    #[test]
    fn decisions_match_the_model_with_resource_in_scopes(input in any_input()) {
        for p in policies_with_resource_in() {
            assert_matches_model(&input, p)?;
        }
    }
}

// Every pair of policy sets decides each input twice: fewer cases suffice.
proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..config() })]

    /// The impact replay of a new version (issue 19 §2) counts exactly the
    /// decisions whose outcome or categories sent differ between two
    /// versions, in the right direction; its breakdowns add up to the total;
    /// a version against itself changes nothing; and swapping the versions
    /// swaps the directions.
    #[test]
    fn an_impact_replay_counts_what_two_versions_decide_differently(inputs in prop::collection::vec(any_input(), 1..6)) {
        let facts: Vec<DecisionFacts> = inputs
            .iter()
            .map(|i| gather(&i.case, &i.consent, italy(), Some(&i.recipient), i.purpose, now()).0)
            .collect();
        let sent = |d: &Decision| -> BTreeSet<DataCategory> {
            if d.is_allow() { d.sent().keys().copied().collect() } else { BTreeSet::new() }
        };
        for before in policies() {
            for after in policies() {
                let tally = impact(&facts, &before.policy, &after.policy);
                prop_assert_eq!(tally.replayed, facts.len() as u64);
                let mut expected = Changes::default();
                for input in &inputs {
                    let (old, new) = (input.decide(&before.policy).0, input.decide(&after.policy).0);
                    let (old_sent, new_sent) = (sent(&old), sent(&new));
                    if old.is_allow() != new.is_allow() || old_sent != new_sent {
                        expected.decisions += 1;
                    }
                    expected.allow_to_deny += u64::from(old.is_allow() && !new.is_allow());
                    expected.deny_to_allow += u64::from(!old.is_allow() && new.is_allow());
                    expected.sent_to_withheld += old_sent.difference(&new_sent).count() as u64;
                    expected.withheld_to_sent += new_sent.difference(&old_sent).count() as u64;
                }
                prop_assert_eq!(tally.changed, expected, "{} -> {}", before.name, after.name);
                let sum = |rows: Vec<&Changes>| rows.into_iter().fold(Changes::default(), |mut total, c| {
                    total.decisions += c.decisions;
                    total.allow_to_deny += c.allow_to_deny;
                    total.deny_to_allow += c.deny_to_allow;
                    total.sent_to_withheld += c.sent_to_withheld;
                    total.withheld_to_sent += c.withheld_to_sent;
                    total
                });
                prop_assert_eq!(sum(tally.by_recipient.values().collect()), expected);
                prop_assert_eq!(sum(tally.by_purpose.values().collect()), expected);
                let by_category = sum(tally.by_category.values().collect());
                prop_assert_eq!((by_category.sent_to_withheld, by_category.withheld_to_sent), (expected.sent_to_withheld, expected.withheld_to_sent));
                prop_assert!(tally.by_category.values().chain(tally.by_purpose.values()).all(|c| !c.is_empty()), "rows without change");
                if before.name == after.name {
                    prop_assert_eq!(&tally, &Impact { replayed: facts.len() as u64, ..Impact::default() });
                }
                let back = impact(&facts, &after.policy, &before.policy);
                prop_assert_eq!(
                    (back.changed.decisions, back.changed.allow_to_deny, back.changed.deny_to_allow, back.changed.sent_to_withheld, back.changed.withheld_to_sent),
                    (expected.decisions, expected.deny_to_allow, expected.allow_to_deny, expected.withheld_to_sent, expected.sent_to_withheld)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Emergency override (issue 21 §4)
// ---------------------------------------------------------------------------

fn override_request() -> BoxedStrategy<OverrideRequest> {
    (prop::sample::select(OverrideReason::ALL), "[a-z_]{1,20}")
        .prop_map(|(reason, code)| OverrideRequest { reason, justification_code: JustificationCode::parse(&code).unwrap() })
        .boxed()
}

proptest! {
    #![proptest_config(config())]

    /// An approved override replaces missing consent for what the purpose
    /// needs, and nothing else: never for a state actor of an origin state
    /// (so never past the asylum firewall), never an explicit refusal or
    /// withdrawal, never `case_notes` without a scope naming it, never the
    /// `asylum` category without consent; and where it replaced consent, no
    /// consent reason withholds the category any more.
    #[test]
    fn an_override_replaces_missing_consent_and_nothing_else(input in any_input(), request in override_request()) {
        let (facts, _) = gather(&input.case, &input.consent, italy(), Some(&input.recipient), input.purpose, now());
        let (sits, acts) = input.origin_contact();
        let state_actor_of_origin = input.state_actor() && (sits || acts);
        for p in policies() {
            match decide_under_override(&facts, &p.policy, &request) {
                Err(OverrideRefusal::StateActorOfOriginState) => prop_assert!(state_actor_of_origin, "{}", p.name),
                Err(OverrideRefusal::NotAChild) => prop_assert!(request.reason == OverrideReason::ChildAtImminentRisk && !facts.case.child),
                Err(OverrideRefusal::RecipientUnknown) => prop_assert!(false, "the recipient is known"),
                Ok((decision, overridden)) => {
                    prop_assert!(!state_actor_of_origin, "{}", p.name);
                    for category in decision.sent().keys() {
                        let coverage = input.coverage(*category);
                        prop_assert!(!matches!(coverage, Coverage::Refused | Coverage::Withdrawn), "{}: {} sent over a no", p.name, category);
                        if *category == DataCategory::CaseNotes {
                            prop_assert!(matches!(coverage, Coverage::Granted { named: true, .. }), "{}: case notes", p.name);
                        }
                        if *category == DataCategory::Asylum {
                            prop_assert!(matches!(coverage, Coverage::Granted { .. }), "{}: asylum without consent", p.name);
                            prop_assert!(!sits, "{}: the asylum category in an origin state", p.name);
                        }
                        if !matches!(coverage, Coverage::Granted { .. }) {
                            prop_assert!(overridden.contains(category), "{}: {} sent without consent or override", p.name, category);
                        }
                    }
                    for category in &overridden {
                        let missing = matches!(input.coverage(*category), Coverage::NotGiven | Coverage::Expired | Coverage::NotYetValid);
                        prop_assert!(missing, "{}: {} overridden over consent given or refused", p.name, category);
                        let consent_reasons = [
                            ReasonCode::ConsentNotGiven,
                            ReasonCode::ConsentExpired,
                            ReasonCode::ConsentNotYetValid,
                            ReasonCode::ChildGuardianConsentMissing,
                        ];
                        if let Some(withheld) = decision.withheld().get(category) {
                            prop_assert!(withheld.iter().all(|w| !consent_reasons.contains(&w.reason)), "{}: {} {:?}", p.name, category, withheld);
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Onward referral (issue 21 §3)
// ---------------------------------------------------------------------------

/// A referral whose consent may let it go onward (a scope for its recipient
/// with onward to some kinds), an organisation it is to be passed on to
/// (often a state actor in, or acting for, one of the person's origin
/// states), the onward purpose, what the recipient still holds, and how
/// many minutes after the decision.
#[derive(Debug, Clone)]
struct OnwardInput {
    input: Input,
    onward: Recipient,
    purpose: Purpose,
    held: BTreeSet<DataCategory>,
    later: i64,
}

fn onward_input() -> BoxedStrategy<OnwardInput> {
    let scope = (prop::sample::subsequence(Purpose::ALL, 1..=Purpose::ALL.len()), onward_consent(), MINUTE..200 * DAY);
    (
        any_input(),
        prop::option::weighted(0.7, scope),
        recipient(RecipientKind::ALL),
        (0..6usize, 0..4usize),
        prop::option::weighted(0.3, prop::sample::select(Purpose::ALL)),
        prop_oneof![1 => Just(DataCategory::ALL.iter().copied().collect()), 1 => set_of(DataCategory::ALL, DataCategory::ALL.len())],
        prop_oneof![3 => Just(0i64), 1 => 0..300 * DAY],
    )
        .prop_map(|(mut input, scope, (onward, _), (placement, pick), purpose, held, later)| {
            let mut consented_kinds = Vec::new();
            if let Some((purposes, onward_consent, lasts)) = scope {
                consented_kinds.extend(onward_consent.recipient_kinds.iter().copied());
                let selector = RecipientSelector::new(Some(input.recipient.id.clone()), None, None).unwrap();
                let all = CategorySelection::All(AllCategories::All);
                let scope = Scope::new(purposes.into_iter().chain([input.purpose]).collect(), all, vec![selector], None, minutes_from_now(lasts));
                input.consent.scopes.push(scope.unwrap().with_onward(Some(onward_consent)));
            }
            // Where the onward organisation is: in the recipient's country and
            // of a kind the consent names, sitting in an origin state of the
            // person, acting for one, or as generated.
            let origins: Vec<CountryCode> = case_facts(&input.case, &input.consent, now()).origin_states.to_vec();
            let listed = onward.is_state_actor() && !STATE_KINDS.contains(&onward.kind);
            let moved = |country: CountryCode, kind: RecipientKind| Recipient::new(onward.id.clone(), country, kind, listed, onward.services.clone());
            let onward = match (placement, origins.get(pick % origins.len().max(1))) {
                (0 | 3 | 4, _) => moved(input.recipient.country, consented_kinds.get(pick % consented_kinds.len().max(1)).copied().unwrap_or(onward.kind)),
                (1, Some(origin)) => moved(*origin, onward.kind),
                (2, Some(origin)) => moved(input.recipient.country, consented_kinds.get(pick % consented_kinds.len().max(1)).copied().unwrap_or(onward.kind)).representing(*origin),
                _ => onward,
            };
            // Mostly for the referral's own purpose; sometimes another.
            let purpose = purpose.unwrap_or(input.purpose);
            OnwardInput { input, onward, purpose, held, later: later.min(400 * DAY) }
        })
        .boxed()
}

impl OnwardInput {
    /// What may be passed on under `policy`'s decision, and the decision's
    /// categories. With `dpo_asked` false, every onward question is answered
    /// yes: the gateway's own rules alone (the built-in Cedar rules, which
    /// `refer_onward` meets too, then stand aside).
    fn pass_on(&self, policy: &DataProtectionPolicy, dpo_asked: bool) -> (Result<BTreeSet<DataCategory>, OnwardRefusal>, BTreeSet<DataCategory>, bool) {
        let (decision, _) = self.input.decide(policy);
        let sent = decision.sent_categories();
        let facts = case_facts(&self.input.case, &self.input.consent, now());
        let request = policy.facts(&self.input.recipient, italy(), &facts).unwrap();
        let permits = |question| if dpo_asked { policy.permits_onward(&request, &self.input.recipient, question, now()) } else { Some(DateTime::<Utc>::MAX_UTC) };
        let limits = onward_limits(&self.input.consent, &facts, self.input.purpose, &self.input.recipient, &sent, SentUnder::Consent, now(), permits);
        let here = self.input.recipient.country;
        let result = onward_categories(&limits, self.purpose, &self.onward, here, &self.held, minutes_from_now(self.later));
        (result, sent, limits.allow_nothing())
    }

    fn state_actor_of_origin(&self) -> bool {
        let facts = case_facts(&self.input.case, &self.input.consent, now());
        facts.asylum_linked
            && self.onward.is_state_actor()
            && (facts.origin_states.contains(&self.onward.country) || facts.origin_states.contains(&self.onward.state()))
    }
}

proptest! {
    // Twice the usual cases: most random referrals are denied, leaving nothing to pass on.
    #![proptest_config(ProptestConfig { cases: 2 * CASES, ..config() })]

    /// What goes onward is never more than was sent and is still held,
    /// only what a scope of the person's consent lets go onward to that kind
    /// of organisation for that purpose, in time, in the country unless it
    /// may leave, never over a refusal; and an asylum-linked case never
    /// reaches a state actor of an origin state, whatever the consent says.
    #[test]
    fn onward_referral_never_widens_and_never_reaches_an_origin_state_official(input in onward_input()) {
        let at = minutes_from_now(input.later);
        let here = input.input.recipient.country;
        for (p, dpo_asked) in policies().iter().chain([shipped_with_onward_permits()]).flat_map(|p| [(p, true), (p, false)]) {
            let (result, sent, nothing) = input.pass_on(&p.policy, dpo_asked);
            if input.input.consent.withdrawn_at.is_some() || sent.is_empty() {
                prop_assert!(nothing, "{}: limits without consent or without anything sent", p.name);
            }
            if let Ok(categories) = result {
                prop_assert!(!input.state_actor_of_origin(), "{}", p.name);
                prop_assert!(!categories.is_empty());
                prop_assert!(categories.is_subset(&sent) && categories.is_subset(&input.held), "{}: {:?} of {:?} held {:?}", p.name, categories, sent, input.held);
                prop_assert!(input.onward.country == here && input.onward.state() == here, "{}: the case left the country", p.name);
                prop_assert!(!input.onward.is_state_actor() || STATE_KINDS.contains(&input.onward.kind), "{}: a state body of another kind", p.name);
                let origins = case_facts(&input.input.case, &input.input.consent, now()).origin_states;
                prop_assert!(!categories.contains(&DataCategory::Asylum) || !origins.contains(&here), "{}: the asylum history onward in an origin state", p.name);
                prop_assert!(!(input.input.case_is_child() && input.purpose == Purpose::Return), "{}: a child's case onward for return", p.name);
                let consented = input.input.consent.scopes().iter().any(|scope| {
                    scope.onward().is_some_and(|o| o.recipient_kinds.contains(&input.onward.kind))
                        && scope.purposes().contains(&input.purpose)
                        && scope.purposes().contains(&input.input.purpose)
                        && at < scope.valid_until()
                });
                prop_assert!(consented, "{}: no onward scope for {:?} and {}", p.name, input.onward.kind, input.purpose);
                let facts = case_facts(&input.input.case, &input.input.consent, now());
                let request = p.policy.facts(&input.input.recipient, italy(), &facts).unwrap();
                for category in &categories {
                    prop_assert!(input.input.consent.refusals.iter().all(|r| !r.applies_to(input.purpose, *category, &input.onward)), "{}: {} over a refusal", p.name, category);
                    // The DPO's refer_onward, asked as if the scope named the category (the most it could allow).
                    let question = OnwardQuestion { onward_kind: input.onward.kind, onward_purpose: input.purpose, category: *category, named: true };
                    prop_assert!(!dpo_asked || p.policy.permits_onward(&request, &input.input.recipient, question, now()).is_some_and(|until| at < until), "{}: {} onward without a permit in force", p.name, category);
                }
            }
        }
    }
}

/// The shipped policy and its restrictions, with permits for onward
/// referral (for reintegration and family tracing, to every kind, some
/// resting on an agreement that ends): the DPO's forbids meet onward referral.
fn shipped_with_onward_permits() -> &'static PolicyUnderTest {
    static POLICY: OnceLock<PolicyUnderTest> = OnceLock::new();
    POLICY.get_or_init(|| {
        let mut sources = referral_gateway::policy_files::read_sources(&crate::support::repo_path("config/policies")).unwrap();
        sources.push(PolicySource {
            name: "30-onward.cedar".to_owned(),
            text: "@id(\"onward.reintegration\")\n@expires(\"2027-01-15\")\npermit (principal, action == Action::\"refer_onward\", resource)\n\
                   when { context.onward_purpose == Purpose::\"reintegration\" };\n\
                   @id(\"onward.tracing\")\npermit (principal, action == Action::\"refer_onward\", resource)\n\
                   when { context.onward_purpose == Purpose::\"family_tracing\" && !principal.state_actor };\n"
                .to_owned(),
        });
        PolicyUnderTest { name: "shipped+onward".into(), policy: DataProtectionPolicy::compile(&sources).unwrap(), rules: Vec::new() }
    })
}

/// The property above is not vacuous: under the permit-all policy, enough
/// generated referrals let something go onward, and enough bring limits
/// that let something go onward together with an official of an origin
/// state of an asylum-linked person (most random referrals are denied:
/// nothing to pass on).
#[test]
fn onward_inputs_reach_both_outcomes() {
    let mut runner = TestRunner::deterministic();
    let strategy = onward_input();
    let (mut passed, mut firewalled) = (0, 0);
    for _ in 0..1000 {
        let input = strategy.new_tree(&mut runner).unwrap().current();
        let (result, _, nothing) = input.pass_on(permit_all_policy(), false);
        if result.is_ok() {
            passed += 1;
        } else if input.state_actor_of_origin() && !nothing {
            // Limits that let something go onward, and an official of an origin state asking.
            firewalled += 1;
        }
    }
    assert!(passed >= 25 && firewalled >= 25, "passed on {passed}, kept from an origin state's official by the built-in rule {firewalled} of 1000");
}

// ---------------------------------------------------------------------------
// Replies and family assessments: the firewall both ways (issue 22 §1)
// ---------------------------------------------------------------------------

const REPLY_PURPOSES: [Purpose; 2] = [Purpose::TracingReply, Purpose::FamilyAssessment];

/// Inputs where a reply about a child goes back to the family's side: a
/// reply purpose, a child (a child profile), contact details and child
/// safeguards in the case, and a consent scope in force covering every
/// category for the recipient (by a guardian or not, with any
/// determination), so that only the rules stand between the child's
/// whereabouts and the family.
fn child_reply_input() -> BoxedStrategy<Input> {
    (input(), prop::sample::select(REPLY_PURPOSES.to_vec()), contact(), child_safeguards(), any::<bool>())
        .prop_map(|(mut input, purpose, contact, safeguards, separated)| {
            input.purpose = purpose;
            let profile = if separated { ProtectionProfile::SeparatedChild } else { ProtectionProfile::UnaccompaniedChild };
            input.case.protection.get_or_insert_with(Protection::default).profiles.insert(profile);
            input.case.contact = Some(contact);
            input.case.child_safeguards = Some(safeguards);
            input.case.identity.get_or_insert_with(Identity::default).given_names.get_or_insert_with(|| ShortText::parse("QjGivenChild").unwrap());
            let selector = RecipientSelector::new(Some(input.recipient.id.clone()), None, None).unwrap();
            let scope = Scope::new([purpose].into(), CategorySelection::All(AllCategories::All), vec![selector], None, minutes_from_now(DAY)).unwrap();
            input.consent.scopes.push(scope);
            input.consent.withdrawn_at = None;
            input.consent.refusals.clear();
            input
        })
        .boxed()
}

/// Inputs of a family-assessment request about an asylum-linked child to
/// an organisation sitting in, or acting for, one of the child's origin states.
fn assessment_request_to_origin_input() -> BoxedStrategy<Input> {
    (origin_input(RecipientKind::ALL, true), any::<bool>())
        .prop_map(|(mut input, separated)| {
            input.purpose = Purpose::FamilyAssessmentRequest;
            let profile = if separated { ProtectionProfile::SeparatedChild } else { ProtectionProfile::UnaccompaniedChild };
            input.case.protection.get_or_insert_with(Protection::default).profiles.insert(profile);
            input
        })
        .boxed()
}

proptest! {
    #![proptest_config(config())]

    /// A family-assessment request about an asylum-linked child never
    /// reaches an authority of an origin state (social services of the
    /// country the child fled included), under any policy: only non-state
    /// bodies may assess such a family.
    #[test]
    fn a_family_assessment_request_for_an_asylum_linked_child_never_reaches_an_origin_state_authority(
        input in assessment_request_to_origin_input()
    ) {
        let (sits, acts) = input.origin_contact();
        prop_assume!(input.case_is_child() && model_facts(&input).asylum_linked && input.state_actor() && (sits || acts));
        for p in policies() {
            let (decision, payload) = input.decide(&p.policy);
            prop_assert!(!decision.is_allow() && decision.sent().is_empty() && payload.is_empty(), "{}: {:?}", p.name, decision.sent_categories());
            prop_assert!(decision.deny_reasons().contains(&ReasonCode::AsylumFirewall) || decision.deny_reasons().contains(&ReasonCode::RequiredCategoryMissing), "{}", p.name);
        }
    }

    /// A reply about a child never tells the family's side where the child
    /// is (contact details, the guardian, the family, notes) unless the guardian consented and
    /// a completed determination recommends the child rejoin the family;
    /// when the contact details go, the determination goes with them, and
    /// the requesting gateway's own screening lets the reply through.
    #[test]
    fn a_reply_never_tells_the_family_where_a_child_is_unless_guardian_and_determination_allow(
        input in child_reply_input()
    ) {
        let facts = model_facts(&input);
        prop_assume!(facts.child);
        let allowed = facts.by_guardian && facts.favours_family;
        for p in policies() {
            let (decision, payload) = input.decide(&p.policy);
            for category in [DataCategory::Contact, DataCategory::ChildSafeguards, DataCategory::Family, DataCategory::CaseNotes] {
                prop_assert!(allowed || !decision.sent().contains_key(&category), "{}: {} sent", p.name, category);
                if !allowed && input.case.has(category) && !decision.sent().contains_key(&category) {
                    let reasons = decision.withheld().get(&category).map(|w| w.iter().map(|w| w.reason).collect::<Vec<_>>()).unwrap_or_default();
                    prop_assert!(reasons.contains(&ReasonCode::ChildWhereaboutsToFamily) || reasons.contains(&ReasonCode::NotNeededForPurpose), "{}: {} {:?}", p.name, category, reasons);
                }
            }
            if [DataCategory::Contact, DataCategory::Family, DataCategory::CaseNotes].iter().any(|c| payload.get(*c).is_some()) {
                prop_assert!(payload.get(DataCategory::ChildSafeguards).is_some(), "{}: whereabouts without the determination", p.name);
                let body = payload.to_json();
                let received = Received { sender: italy(), purpose: input.purpose, body: &body, consent_expires_at: None, retention_until: None };
                let screened = screen(&received, Some(&input.recipient), input.recipient.country, &p.policy, now());
                if let Screening::Refuse(reasons) = screened {
                    prop_assert!(!reasons.contains(&ReasonCode::ChildWhereaboutsToFamily), "{}: refused at the requesting gateway", p.name);
                }
            }
        }
    }
}

/// The reply property reaches both outcomes often: a reply that tells
/// where the child is, and one that may not.
#[test]
fn child_replies_reach_both_outcomes() {
    let mut runner = TestRunner::deterministic();
    let (mut told, mut withheld) = (0, 0);
    for _ in 0..400 {
        let input = child_reply_input().new_tree(&mut runner).unwrap().current();
        let (decision, _) = input.decide(permit_all_policy());
        match decision.sent().contains_key(&DataCategory::Contact) {
            true => told += 1,
            false => withheld += 1,
        }
    }
    assert!(told >= 10 && withheld >= 10, "told {told}, withheld {withheld}");
}
