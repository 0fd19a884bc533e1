//! Closed vocabularies from the field guidance: purposes, data categories,
//! profiles and recipient kinds. Each is an enum, so an unknown value is a
//! parse error, never a silently ignored string.



use std::str::FromStr;

use super::ParseError;

vocabulary! {
    /// What a packet is for. Every packet has exactly one purpose. The last
    /// two are answers: a recipient sends them back only as a reply to a
    /// request of the purpose they answer ([`Purpose::answers`]).
    Purpose, "purpose" {
        Return => "return",
        Reintegration => "reintegration",
        FamilyTracing => "family_tracing",
        FamilyAssessmentRequest => "family_assessment_request",
        TracingReply => "tracing_reply",
        FamilyAssessment => "family_assessment",
    }
}

impl Purpose {
    /// The request purpose a reply purpose answers; `None` for a purpose
    /// that is not a reply. A tracing request is answered by a tracing reply
    /// (the traced relative found), a family-assessment request by the
    /// assessment of the child's family.
    pub const fn answers(self) -> Option<Purpose> {
        match self {
            Self::TracingReply => Some(Self::FamilyTracing),
            Self::FamilyAssessment => Some(Self::FamilyAssessmentRequest),
            Self::Return | Self::Reintegration | Self::FamilyTracing | Self::FamilyAssessmentRequest => None,
        }
    }

    /// Whether packets of this purpose are sent only as replies.
    pub const fn is_reply(self) -> bool {
        self.answers().is_some()
    }

    /// Whether a request of this purpose may be answered by a reply case,
    /// so that its packet names the organisation that asked.
    pub const fn expects_reply(self) -> bool {
        matches!(self, Self::FamilyTracing | Self::FamilyAssessmentRequest)
    }
}

vocabulary! {
    /// Field groups of a case. A packet carries whole categories or less.
    DataCategory, "data category" {
        Identity => "identity",
        Contact => "contact",
        Documents => "documents",
        Family => "family",
        Health => "health",
        Protection => "protection",
        Asylum => "asylum",
        ChildSafeguards => "child_safeguards",
        ReturnLogistics => "return_logistics",
        ReintegrationNeeds => "reintegration_needs",
        TracingWishes => "tracing_wishes",
        FamilyAssessment => "family_assessment",
        CaseNotes => "case_notes",
    }
}

impl DataCategory {
    /// Special categories need the strongest justification to be shared.
    pub const fn is_special(self) -> bool {
        // A family assessment records risks in a household (violence,
        // exploitation, a caregiver's health): as sensitive as protection.
        matches!(self, Self::Health | Self::Protection | Self::Asylum | Self::FamilyAssessment | Self::CaseNotes)
    }
}

vocabulary! {
    /// Case types that are not about asylum. They live in the `protection` category.
    ProtectionProfile, "profile" {
        VictimOfTrafficking => "victim_of_trafficking",
        UnaccompaniedChild => "unaccompanied_child",
        SeparatedChild => "separated_child",
        StrandedMigrant => "stranded_migrant",
        StatelessPerson => "stateless_person",
        SgbvSurvivor => "sgbv_survivor",
        MedicalNeeds => "medical_needs",
        Elderly => "elderly",
        Pregnant => "pregnant",
        Disability => "disability",
        MigrantInDetention => "migrant_in_detention",
    }
}

vocabulary! {
    /// Asylum case types. They live in the `asylum` category, so that sharing
    /// `protection` can never reveal an asylum link.
    AsylumStatus, "profile" {
        AsylumSeeker => "asylum_seeker",
        Refugee => "refugee",
        RejectedAsylumSeeker => "rejected_asylum_seeker",
    }
}

/// Any profile from the field guidance; the case model keeps the two halves apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Protection(ProtectionProfile),
    Asylum(AsylumStatus),
}

impl Profile {
    pub fn all() -> impl Iterator<Item = Profile> {
        ProtectionProfile::ALL
            .iter()
            .map(|p| Profile::Protection(*p))
            .chain(AsylumStatus::ALL.iter().map(|a| Profile::Asylum(*a)))
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Profile::Protection(p) => p.as_str(),
            Profile::Asylum(a) => a.as_str(),
        }
    }
}

impl FromStr for Profile {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ProtectionProfile::from_str(text)
            .map(Profile::Protection)
            .or_else(|_| AsylumStatus::from_str(text).map(Profile::Asylum))
    }
}

vocabulary! {
    /// Kinds of recipient organisation. Government kinds are state actors.
    RecipientKind, "recipient kind" {
        Immigration => "immigration",
        Police => "police",
        Border => "border",
        SocialWelfare => "social_welfare",
        ChildProtection => "child_protection",
        HealthMinistry => "health_ministry",
        Consular => "consular",
        AsylumAuthority => "asylum_authority",
        NationalReferralMechanism => "national_referral_mechanism",
        EmploymentService => "employment_service",
        Iom => "iom",
        Unhcr => "unhcr",
        Unicef => "unicef",
        Icrc => "icrc",
        RedCrossRedCrescent => "red_cross_red_crescent",
        Ngo => "ngo",
        HealthProvider => "health_provider",
    }
}

impl RecipientKind {
    /// Government bodies are state actors whatever a directory says; a directory
    /// may mark a non-government organisation as a state actor too, never the reverse.
    pub const fn is_state_actor(self) -> bool {
        match self {
            Self::Immigration
            | Self::Police
            | Self::Border
            | Self::SocialWelfare
            | Self::ChildProtection
            | Self::HealthMinistry
            | Self::Consular
            | Self::AsylumAuthority
            | Self::NationalReferralMechanism
            | Self::EmploymentService => true,
            Self::Iom
            | Self::Unhcr
            | Self::Unicef
            | Self::Icrc
            | Self::RedCrossRedCrescent
            | Self::Ngo
            | Self::HealthProvider => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_through_serde_and_from_str() {
        for category in DataCategory::ALL {
            let json = serde_json::to_string(category).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", category.as_str()));
            assert_eq!(category.as_str().parse::<DataCategory>().ok(), Some(*category));
        }
        for profile in Profile::all() {
            assert_eq!(profile.as_str().parse::<Profile>().ok(), Some(profile));
        }
    }

    #[test]
    fn unknown_values_are_rejected() {
        assert!("healthcare".parse::<DataCategory>().is_err());
        assert!("Return".parse::<Purpose>().is_err());
        assert!(serde_json::from_str::<RecipientKind>("\"government\"").is_err());
    }

    #[test]
    fn every_reply_purpose_answers_a_request_that_expects_one() {
        for purpose in Purpose::ALL {
            if let Some(request) = purpose.answers() {
                assert!(request.expects_reply() && !request.is_reply(), "{purpose}");
            }
        }
        let answered: Vec<_> = Purpose::ALL.iter().filter_map(|p| p.answers()).collect();
        let expecting: Vec<_> = Purpose::ALL.iter().copied().filter(|p| p.expects_reply()).collect();
        assert_eq!(answered, expecting);
    }

    #[test]
    fn special_categories_are_the_four_of_the_design_and_the_family_assessment() {
        let special: Vec<_> = DataCategory::ALL.iter().filter(|c| c.is_special()).map(|c| c.as_str()).collect();
        assert_eq!(special, ["health", "protection", "asylum", "family_assessment", "case_notes"]);
    }

    #[test]
    fn government_kinds_are_state_actors_and_humanitarian_ones_are_not() {
        for kind in [RecipientKind::Immigration, RecipientKind::Police, RecipientKind::Consular, RecipientKind::NationalReferralMechanism] {
            assert!(kind.is_state_actor(), "{kind}");
        }
        for kind in [RecipientKind::Iom, RecipientKind::Unhcr, RecipientKind::Icrc, RecipientKind::Ngo, RecipientKind::RedCrossRedCrescent] {
            assert!(!kind.is_state_actor(), "{kind}");
        }
    }
}
