//! The purpose baseline: for each purpose, the categories it may need and,
//! within each, the fields. Nothing outside this table is ever sent, whatever
//! consent and policy allow. `docs/policy-guide.md` explains each line.
//!
//! Field names are the JSON keys of the case model; for list categories
//! (`documents`) they apply to each entry, and `case_notes` is all or nothing.

use super::{DataCategory, Purpose};

/// Fields a purpose may need from one category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fields {
    All,
    Only(&'static [&'static str]),
}

impl Fields {
    pub fn includes(self, field: &str) -> bool {
        match self {
            Fields::All => true,
            Fields::Only(names) => names.contains(&field),
        }
    }
}

use DataCategory as C;
use Fields::{All, Only};

const RETURN: &[(DataCategory, Fields)] = &[
    (C::Identity, All),
    (C::Contact, All),
    (C::Documents, All),
    // Who will meet the person on arrival, not the whole family.
    (C::Family, Only(&["next_of_kin"])),
    // Only what travel arrangements need; never diagnoses, and not medication
    // either: a drug's name reveals the diagnosis (antiretrovirals, HIV).
    (C::Health, Only(&["fitness_to_travel", "escort_needs"])),
    (C::Protection, Only(&["profiles", "risk_level"])),
    (C::ChildSafeguards, All),
    (C::ReturnLogistics, All),
    (C::CaseNotes, All),
];

const REINTEGRATION: &[(DataCategory, Fields)] = &[
    (C::Identity, Only(&["given_names", "family_name", "other_names", "sex", "date_of_birth", "date_of_birth_estimated", "languages"])),
    (C::Contact, All),
    (C::Documents, All),
    (C::Family, All),
    // Care, not travel: diagnoses may go, travel fitness is not needed.
    (C::Health, Only(&["conditions", "pregnancy_weeks", "disability", "medication_needs"])),
    (C::Protection, All),
    // Voluntary repatriation of refugees: UNHCR needs the status to assist.
    // Rule (b) still withholds it from any recipient in an origin state.
    (C::Asylum, Only(&["status"])),
    (C::ChildSafeguards, All),
    (C::ReturnLogistics, Only(&["travel_date", "destination", "arrival_assistance"])),
    (C::ReintegrationNeeds, All),
    (C::CaseNotes, All),
];

const FAMILY_TRACING: &[(DataCategory, Fields)] = &[
    (C::Identity, Only(&["given_names", "family_name", "other_names", "sex", "date_of_birth", "date_of_birth_estimated", "place_of_birth", "nationalities", "languages", "former_habitual_residence"])),
    (C::Family, All),
    // Enough to help identify the person; not document numbers.
    (C::Documents, Only(&["type", "issuing_country"])),
    // Who answers for a child; never where the child is, which a traced
    // relative could misuse: contact details are not in the tracing baseline.
    (C::ChildSafeguards, Only(&["guardian"])),
    (C::CaseNotes, All),
];

// A family-assessment request goes to a body in the family's country that
// will visit the family: it must know which child and which family, and
// where the best-interests procedure stands. Never where the child is
// (contact, the guardian, placement): the family is told that only by the
// child's side, if the determination allows.
const FAMILY_ASSESSMENT_REQUEST: &[(DataCategory, Fields)] = &[
    (C::Identity, Only(&["given_names", "family_name", "other_names", "sex", "date_of_birth", "date_of_birth_estimated", "place_of_birth", "nationalities", "languages", "former_habitual_residence"])),
    (C::Family, All),
    (C::Documents, Only(&["type", "issuing_country"])),
    // Why the child is alone, not the exploitation details.
    (C::Protection, Only(&["profiles", "risk_level"])),
    (C::ChildSafeguards, Only(&["best_interests_assessment"])),
    // No case notes: free text about a child may say where the child is.
];

// A tracing reply: who was found, how to reach them (if they agree), and
// what they wish. Contact details are here because reaching the traced
// person is the point; the built-in rule withholds a child's whereabouts
// unless the guardian and the best-interests determination allow it.
const TRACING_REPLY: &[(DataCategory, Fields)] = &[
    (C::Identity, Only(&["given_names", "family_name", "other_names", "sex", "date_of_birth", "date_of_birth_estimated", "place_of_birth", "nationalities", "languages"])),
    (C::Contact, All),
    (C::Family, All),
    // With the determination, which the receiving gateway must see to let
    // a child's contact details through (rule (d)).
    (C::ChildSafeguards, Only(&["guardian", "best_interests_determination"])),
    (C::TracingWishes, All),
    (C::CaseNotes, All),
];

// A family assessment: the family assessed, the assessment, and how to
// reach the family for the reunification the assessment may recommend.
const FAMILY_ASSESSMENT: &[(DataCategory, Fields)] = &[
    (C::Identity, Only(&["given_names", "family_name", "other_names", "sex", "date_of_birth", "date_of_birth_estimated", "languages"])),
    (C::Contact, All),
    (C::Family, All),
    (C::FamilyAssessment, All),
    (C::CaseNotes, All),
];

/// The baseline of `purpose`: every category it may need, with the fields.
pub const fn baseline(purpose: Purpose) -> &'static [(DataCategory, Fields)] {
    match purpose {
        Purpose::Return => RETURN,
        Purpose::Reintegration => REINTEGRATION,
        Purpose::FamilyTracing => FAMILY_TRACING,
        Purpose::FamilyAssessmentRequest => FAMILY_ASSESSMENT_REQUEST,
        Purpose::TracingReply => TRACING_REPLY,
        Purpose::FamilyAssessment => FAMILY_ASSESSMENT,
    }
}

/// The fields `purpose` may need from `category`, or `None` when it needs none.
pub fn needed_fields(purpose: Purpose, category: DataCategory) -> Option<Fields> {
    baseline(purpose).iter().find(|(c, _)| *c == category).map(|(_, fields)| *fields)
}

/// Categories without which a packet of this purpose is useless: a referral
/// that cannot say who it is about, or a tracing request without the family
/// to trace, is denied rather than sent half-empty.
pub const fn required_categories(purpose: Purpose) -> &'static [DataCategory] {
    match purpose {
        Purpose::Return | Purpose::Reintegration => &[C::Identity],
        Purpose::FamilyTracing | Purpose::FamilyAssessmentRequest => &[C::Identity, C::Family],
        Purpose::TracingReply => &[C::Identity],
        Purpose::FamilyAssessment => &[C::FamilyAssessment],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::case::Case;

    /// Every field named in the table must be a real key of the case model,
    /// or a typo would silently withhold a field.
    #[test]
    fn every_named_field_exists_in_the_case_schema() {
        let schema = serde_json::to_value(schemars::schema_for!(Case)).unwrap();
        let definitions = &schema["$defs"];
        let category_type = |category: DataCategory| match category {
            C::Identity => "Identity",
            C::Contact => "Contact",
            C::Documents => "Document",
            C::Family => "Family",
            C::Health => "Health",
            C::Protection => "Protection",
            C::Asylum => "Asylum",
            C::ChildSafeguards => "ChildSafeguards",
            C::ReturnLogistics => "ReturnLogistics",
            C::ReintegrationNeeds => "ReintegrationNeeds",
            C::TracingWishes => "TracingWishes",
            C::FamilyAssessment => "FamilyAssessment",
            C::CaseNotes => "",
        };
        for purpose in Purpose::ALL {
            for (category, fields) in baseline(*purpose) {
                if let Only(names) = fields {
                    let properties = &definitions[category_type(*category)]["properties"];
                    for name in *names {
                        assert!(properties.get(name).is_some(), "{purpose}: {category}.{name} is not a field");
                    }
                }
            }
        }
    }

    #[test]
    fn health_never_serves_family_tracing_and_asylum_never_serves_return() {
        assert_eq!(needed_fields(Purpose::FamilyTracing, C::Health), None);
        assert_eq!(needed_fields(Purpose::Return, C::Asylum), None);
        assert_eq!(needed_fields(Purpose::FamilyTracing, C::Contact), None);
    }

    #[test]
    fn return_sees_travel_fitness_but_not_diagnoses() {
        let fields = needed_fields(Purpose::Return, C::Health).unwrap();
        assert!(fields.includes("fitness_to_travel"));
        assert!(!fields.includes("conditions"));
    }

    #[test]
    fn required_categories_are_in_the_baseline() {
        for purpose in Purpose::ALL {
            for category in required_categories(*purpose) {
                assert!(needed_fields(*purpose, *category).is_some());
            }
        }
    }
}
