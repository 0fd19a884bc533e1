//! The case model, grouped by data category, and the facts derived from it.
//!
//! The gateway is not a case-management system: this is only what a sender may
//! need to pass across a border. Every field is optional because real cases
//! are incomplete; what a purpose needs is decided by the purpose baseline.
//!
//! Some 650 lines, on purpose: the case model is one JSON document, and its
//! types read top to bottom as the document nests (the JSON Schema is
//! generated from them).

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::text::{NoteText, ShortText};
use super::{AsylumStatus, CountryCode, DataCategory, LanguageCode, ProtectionProfile};

/// Age of majority used for child protection (CRC art. 1).
pub const AGE_OF_MAJORITY: i32 = 18;

#[derive(Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::unique::list_of_at_most::<_, _, 20>")]
    #[schemars(length(max = 20))]
    pub documents: Vec<Document>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<Family>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<Protection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asylum: Option<Asylum>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_safeguards: Option<ChildSafeguards>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_logistics: Option<ReturnLogistics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reintegration_needs: Option<ReintegrationNeeds>,
    /// What a traced person wishes: contact with the family that searches,
    /// their whereabouts told, reunification. Sent back in a tracing reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing_wishes: Option<TracingWishes>,
    /// An assessment of a child's family, for the best-interests
    /// determination before a return or a reunification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_assessment: Option<FamilyAssessment>,
    /// Free-text notes. They leave only if a consent scope names `case_notes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::unique::list_of_at_most::<_, _, 50>")]
    #[schemars(length(max = 50))]
    pub case_notes: Vec<NoteText>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Female,
    Male,
    Other,
    Unknown,
}

/// A country and, optionally, a town or district within it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Place {
    pub country: CountryCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<ShortText>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_names: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::unique::list_of_at_most::<_, _, 20>")]
    #[schemars(length(max = 20))]
    pub other_names: Vec<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<NaiveDate>,
    /// True when the date of birth comes from an age assessment, not a document.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub date_of_birth_estimated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place_of_birth: Option<Place>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", deserialize_with = "super::unique::set_of_at_most::<_, _, 10>")]
    #[schemars(length(max = 10))]
    pub nationalities: BTreeSet<CountryCode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::unique::unique_list_of_at_most::<_, _, 20>")]
    #[schemars(length(max = 20), extend("uniqueItems" = true))]
    pub languages: Vec<LanguageCode>,
    /// Where the person usually lived before leaving: one of their origin states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub former_habitual_residence: Option<Place>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_location: Option<Place>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentType {
    Passport,
    NationalId,
    BirthCertificate,
    TravelDocument,
    ResidencePermit,
    LaissezPasser,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(rename = "type")]
    pub document_type: DocumentType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuing_country: Option<CountryCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<NaiveDate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Relationship {
    Mother,
    Father,
    Parent,
    Sibling,
    Spouse,
    Child,
    Grandparent,
    AuntOrUncle,
    Cousin,
    OtherRelative,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FamilyMember {
    pub relationship: Relationship,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_names: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_location: Option<Place>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<ShortText>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Family {
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::unique::list_of_at_most::<_, _, 50>")]
    #[schemars(length(max = 50))]
    pub members: Vec<FamilyMember>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_of_kin: Option<FamilyMember>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FitnessToTravel {
    Fit,
    FitWithEscort,
    Unfit,
    NotAssessed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscortNeed {
    None,
    Medical,
    Social,
    ChildEscort,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::unique::list_of_at_most::<_, _, 50>")]
    #[schemars(length(max = 50))]
    pub conditions: Vec<ShortText>,
    /// Weeks of pregnancy, when pregnant.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "super::unique::pregnancy_weeks")]
    #[schemars(range(min = 1, max = 45))]
    pub pregnancy_weeks: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disability: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::unique::list_of_at_most::<_, _, 50>")]
    #[schemars(length(max = 50))]
    pub medication_needs: Vec<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitness_to_travel: Option<FitnessToTravel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escort_needs: Option<EscortNeed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExploitationType {
    Sexual,
    Labour,
    DomesticServitude,
    ForcedCriminality,
    ForcedMarriage,
    Begging,
    OrganRemoval,
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Protection {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", deserialize_with = "super::unique::set")]
    pub profiles: BTreeSet<ProtectionProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_level: Option<RiskLevel>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", deserialize_with = "super::unique::set")]
    pub exploitation_types: BTreeSet<ExploitationType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationStatus {
    Pending,
    Granted,
    Rejected,
    UnderAppeal,
    Withdrawn,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsylumApplication {
    pub country: CountryCode,
    pub status: ApplicationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lodged_on: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_on: Option<NaiveDate>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Asylum {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", deserialize_with = "super::unique::set")]
    pub status: BTreeSet<AsylumStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::unique::list_of_at_most::<_, _, 20>")]
    #[schemars(length(max = 20))]
    pub applications: Vec<AsylumApplication>,
    /// Countries the person fears return to. Each is an origin state for the firewall.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", deserialize_with = "super::unique::set_of_at_most::<_, _, 20>")]
    #[schemars(length(max = 20))]
    pub feared_return: BTreeSet<CountryCode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardianRole {
    Parent,
    LegalGuardian,
    AppointedGuardian,
    Institution,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guardian {
    pub role: GuardianRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_names: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<ShortText>,
}

/// The durable solution a best-interests procedure recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DurableSolution {
    ReturnToCountryOfOrigin,
    LocalIntegration,
    ResettlementOrThirdCountry,
    FamilyReunificationElsewhere,
}

/// A best-interests assessment or determination. Only a completed one has a
/// date and a recommendation, so "done without a date" cannot be expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum BestInterests {
    // Empty struct variants, not unit variants: serde ignores unknown keys
    // next to the tag of a unit variant, and unknown keys must be refused.
    NotStarted {},
    InProgress {},
    Completed {
        completed_on: NaiveDate,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recommendation: Option<DurableSolution>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChildSafeguards {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardian: Option<Guardian>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_interests_assessment: Option<BestInterests>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_interests_determination: Option<BestInterests>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransportMode {
    Air,
    Land,
    Sea,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArrivalAssistance {
    AirportReception,
    OnwardTransport,
    TemporaryAccommodation,
    MedicalReception,
    FamilyReception,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnLogistics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub travel_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Place>,
    /// Transit countries, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::unique::list_of_at_most::<_, _, 30>")]
    #[schemars(length(max = 30))]
    pub route: Vec<CountryCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escort: Option<EscortNeed>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", deserialize_with = "super::unique::set")]
    pub arrival_assistance: BTreeSet<ArrivalAssistance>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReintegrationNeed {
    Shelter,
    Medical,
    Psychosocial,
    Education,
    Livelihood,
    Legal,
    FamilyReunification,
    Documentation,
    Cash,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReintegrationNeeds {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", deserialize_with = "super::unique::set")]
    pub needs: BTreeSet<ReintegrationNeed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_location: Option<Place>,
}

/// A traced person's answer to one question, as recorded by the tracing
/// officer who found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Wish {
    Yes,
    No,
    Undecided,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingWishes {
    /// Whether they want to be put in touch with the family that searches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_with_family: Option<Wish>,
    /// Whether their whereabouts may be told to that family. A traced
    /// person may agree to contact through the tracing service and still
    /// refuse to be located.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whereabouts_shared: Option<Wish>,
    /// Whether they want to be reunited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reunification: Option<Wish>,
}

/// Someone living in the assessed household, without a name: the
/// assessment is about capacity and risk, the family category names people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HouseholdMember {
    pub relationship: Relationship,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1900, max = 2200))]
    pub year_of_birth: Option<u16>,
    /// Whether this member would care for the child day to day.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub caregiver: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapacityToCare {
    Adequate,
    AdequateWithSupport,
    Inadequate,
    NotAssessed,
}

/// Risks to a child an assessment of the family found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FamilyRisk {
    ViolenceInHousehold,
    Neglect,
    TraffickingOrExploitation,
    ForcedMarriage,
    ChildLabour,
    CaregiverHealth,
    EconomicHardship,
    UnsafeHousing,
    Stigma,
}

/// What the assessing body recommends for the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssessmentRecommendation {
    ReunificationRecommended,
    ReunificationWithSupport,
    ReunificationNotRecommended,
    FurtherAssessmentNeeded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FamilyAssessment {
    pub assessed_on: NaiveDate,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::unique::list_of_at_most::<_, _, 30>")]
    #[schemars(length(max = 30))]
    pub household: Vec<HouseholdMember>,
    pub capacity_to_care: CapacityToCare,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", deserialize_with = "super::unique::set")]
    pub risks: BTreeSet<FamilyRisk>,
    pub recommendation: AssessmentRecommendation,
}

/// Shows which categories hold data, never the data: dates of birth and
/// document numbers must not reach a log line or a panic message.
impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held: Vec<&str> = DataCategory::ALL.iter().filter(|c| self.has(**c)).map(|c| c.as_str()).collect();
        f.debug_struct("Case").field("categories_with_data", &held).finish_non_exhaustive()
    }
}

impl Case {
    /// Whether the person is a child on `today`. An unknown date of birth with a
    /// child profile counts as a child, and so does a child profile that
    /// contradicts a recorded date of birth: age is often contested, and the
    /// protective reading is the safe one.
    pub fn is_child(&self, today: NaiveDate) -> bool {
        let child_profile = self.protection.as_ref().is_some_and(|p| {
            p.profiles.contains(&ProtectionProfile::UnaccompaniedChild)
                || p.profiles.contains(&ProtectionProfile::SeparatedChild)
        });
        let under_age = self
            .identity
            .as_ref()
            .and_then(|i| i.date_of_birth)
            .is_some_and(|born| age_on(born, today) < AGE_OF_MAJORITY);
        child_profile || under_age
    }

    /// Every nationality, the country of former habitual residence and every
    /// country of feared return.
    pub fn origin_states(&self) -> BTreeSet<CountryCode> {
        let mut states = BTreeSet::new();
        if let Some(identity) = &self.identity {
            states.extend(identity.nationalities.iter().copied());
            states.extend(identity.former_habitual_residence.as_ref().map(|p| p.country));
        }
        if let Some(asylum) = &self.asylum {
            states.extend(asylum.feared_return.iter().copied());
        }
        states
    }

    /// An asylum status, a recorded application or a feared return makes a case
    /// asylum-linked, for good: a rejected asylum seeker stays asylum-linked.
    pub fn is_asylum_linked(&self) -> bool {
        self.asylum.as_ref().is_some_and(|a| {
            !a.status.is_empty() || !a.applications.is_empty() || !a.feared_return.is_empty()
        })
    }

    /// The completed best-interests determination, if there is one.
    pub fn best_interests_determination(&self) -> Option<BestInterests> {
        self.child_safeguards
            .as_ref()
            .and_then(|c| c.best_interests_determination)
            .filter(|b| matches!(b, BestInterests::Completed { .. }))
    }

    /// Whether the case holds any data of `category`. A category left at its
    /// default (`"identity": {}`) holds none: every field the JSON form would
    /// show is one that differs from its default.
    pub fn has(&self, category: DataCategory) -> bool {
        fn filled<T: Default + PartialEq>(value: &Option<T>) -> bool {
            value.as_ref().is_some_and(|v| *v != T::default())
        }
        match category {
            DataCategory::Identity => filled(&self.identity),
            DataCategory::Contact => filled(&self.contact),
            DataCategory::Documents => !self.documents.is_empty(),
            DataCategory::Family => filled(&self.family),
            DataCategory::Health => filled(&self.health),
            DataCategory::Protection => filled(&self.protection),
            DataCategory::Asylum => filled(&self.asylum),
            DataCategory::ChildSafeguards => filled(&self.child_safeguards),
            DataCategory::ReturnLogistics => filled(&self.return_logistics),
            DataCategory::ReintegrationNeeds => filled(&self.reintegration_needs),
            DataCategory::TracingWishes => filled(&self.tracing_wishes),
            DataCategory::FamilyAssessment => self.family_assessment.is_some(),
            DataCategory::CaseNotes => !self.case_notes.is_empty(),
        }
    }

    /// Every date in the case that must not lie after `today`, with its field path.
    /// Document expiry and planned travel are the only dates allowed in the future.
    pub fn past_dates(&self) -> Vec<(String, NaiveDate)> {
        let mut dates = Vec::new();
        if let Some(born) = self.identity.as_ref().and_then(|i| i.date_of_birth) {
            dates.push(("case.identity.date_of_birth".to_owned(), born));
        }
        if let Some(family) = &self.family {
            for (index, member) in family.members.iter().enumerate() {
                if let Some(born) = member.date_of_birth {
                    dates.push((format!("case.family.members[{index}].date_of_birth"), born));
                }
            }
            if let Some(born) = family.next_of_kin.as_ref().and_then(|m| m.date_of_birth) {
                dates.push(("case.family.next_of_kin.date_of_birth".to_owned(), born));
            }
        }
        if let Some(asylum) = &self.asylum {
            for (index, application) in asylum.applications.iter().enumerate() {
                let prefix = format!("case.asylum.applications[{index}]");
                dates.extend(application.lodged_on.map(|d| (format!("{prefix}.lodged_on"), d)));
                dates.extend(application.decided_on.map(|d| (format!("{prefix}.decided_on"), d)));
            }
        }
        if let Some(child) = &self.child_safeguards {
            for (name, process) in [
                ("best_interests_assessment", child.best_interests_assessment),
                ("best_interests_determination", child.best_interests_determination),
            ] {
                if let Some(BestInterests::Completed { completed_on, .. }) = process {
                    dates.push((format!("case.child_safeguards.{name}.completed_on"), completed_on));
                }
            }
        }
        if let Some(assessment) = &self.family_assessment {
            dates.push(("case.family_assessment.assessed_on".to_owned(), assessment.assessed_on));
        }
        dates
    }
}

/// Whole years from `born` to `today` (negative when `born` is in the future).
pub fn age_on(born: NaiveDate, today: NaiveDate) -> i32 {
    let had_birthday = (today.month(), today.day()) >= (born.month(), born.day());
    today.year() - born.year() - i32::from(!had_birthday)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn country(code: &str) -> CountryCode {
        CountryCode::parse(code).unwrap()
    }

    fn born(on: NaiveDate) -> Case {
        Case {
            identity: Some(Identity { date_of_birth: Some(on), ..Identity::default() }),
            ..Case::default()
        }
    }

    fn with_profiles(profiles: &[ProtectionProfile]) -> Case {
        Case {
            protection: Some(Protection { profiles: profiles.iter().copied().collect(), ..Protection::default() }),
            ..Case::default()
        }
    }

    #[test]
    fn age_turns_on_the_birthday() {
        assert_eq!(age_on(date(2008, 11, 23), date(2026, 11, 22)), 17);
        assert_eq!(age_on(date(2008, 11, 23), date(2026, 11, 23)), 18);
        assert_eq!(age_on(date(2008, 2, 29), date(2026, 2, 28)), 17);
        assert_eq!(age_on(date(2008, 2, 29), date(2026, 3, 1)), 18);
    }

    #[test]
    fn child_from_date_of_birth() {
        let today = date(2026, 11, 23);
        assert!(born(date(2010, 5, 1)).is_child(today));
        assert!(born(date(2008, 11, 24)).is_child(today));
        assert!(!born(date(2008, 11, 23)).is_child(today));
        assert!(!born(date(1990, 1, 1)).is_child(today));
    }

    #[test]
    fn unknown_date_of_birth_with_child_profile_is_a_child() {
        let today = date(2026, 11, 23);
        assert!(with_profiles(&[ProtectionProfile::UnaccompaniedChild]).is_child(today));
        assert!(with_profiles(&[ProtectionProfile::SeparatedChild]).is_child(today));
        assert!(!with_profiles(&[ProtectionProfile::StrandedMigrant]).is_child(today));
        assert!(!Case::default().is_child(today));
    }

    #[test]
    fn child_profile_wins_over_an_adult_date_of_birth() {
        let mut case = born(date(1999, 1, 1));
        case.protection = with_profiles(&[ProtectionProfile::UnaccompaniedChild]).protection;
        assert!(case.is_child(date(2026, 11, 23)));
    }

    #[test]
    fn origin_states_collect_nationalities_residence_and_feared_return() {
        let case = Case {
            identity: Some(Identity {
                nationalities: [country("ERI"), country("ETH")].into(),
                former_habitual_residence: Some(Place { country: country("SDN"), locality: None }),
                ..Identity::default()
            }),
            asylum: Some(Asylum { feared_return: [country("LBY")].into(), ..Asylum::default() }),
            ..Case::default()
        };
        let states: Vec<_> = case.origin_states().into_iter().map(|c| c.to_string()).collect();
        assert_eq!(states, ["ERI", "ETH", "LBY", "SDN"]);
        assert!(Case::default().origin_states().is_empty());
    }

    #[test]
    fn asylum_link_from_status_application_or_feared_return() {
        assert!(!Case::default().is_asylum_linked());
        let empty_asylum = Case { asylum: Some(Asylum::default()), ..Case::default() };
        assert!(!empty_asylum.is_asylum_linked());
        for asylum in [
            Asylum { status: [AsylumStatus::RejectedAsylumSeeker].into(), ..Asylum::default() },
            Asylum {
                applications: vec![AsylumApplication {
                    country: country("ITA"),
                    status: ApplicationStatus::Withdrawn,
                    lodged_on: None,
                    decided_on: None,
                }],
                ..Asylum::default()
            },
            Asylum { feared_return: [country("ERI")].into(), ..Asylum::default() },
        ] {
            assert!(Case { asylum: Some(asylum), ..Case::default() }.is_asylum_linked());
        }
    }

    #[test]
    fn only_a_completed_determination_counts() {
        let mut case = Case::default();
        assert_eq!(case.best_interests_determination(), None);
        case.child_safeguards = Some(ChildSafeguards {
            best_interests_determination: Some(BestInterests::InProgress {}),
            ..ChildSafeguards::default()
        });
        assert_eq!(case.best_interests_determination(), None);
        let completed = BestInterests::Completed { completed_on: date(2026, 1, 5), recommendation: None };
        case.child_safeguards = Some(ChildSafeguards {
            best_interests_determination: Some(completed),
            ..ChildSafeguards::default()
        });
        assert_eq!(case.best_interests_determination(), Some(completed));
    }

    #[test]
    fn an_empty_category_holds_no_data() {
        let mut case: Case = serde_json::from_str(r#"{"identity": {}, "health": {"conditions": []}}"#).unwrap();
        assert!(!case.has(DataCategory::Identity));
        assert!(!case.has(DataCategory::Health));
        case.identity = Some(Identity { date_of_birth_estimated: true, ..Identity::default() });
        assert!(case.has(DataCategory::Identity));
    }

    #[test]
    fn asylum_profiles_cannot_be_smuggled_into_protection() {
        let json = r#"{"protection": {"profiles": ["refugee"]}}"#;
        assert!(serde_json::from_str::<Case>(json).is_err());
    }

    #[test]
    fn best_interests_completed_needs_a_date() {
        let json = r#"{"status": "completed"}"#;
        assert!(serde_json::from_str::<BestInterests>(json).is_err());
        let json = r#"{"status": "completed", "completed_on": "2026-01-05", "recommendation": "local_integration"}"#;
        assert!(serde_json::from_str::<BestInterests>(json).is_ok());
    }
}
