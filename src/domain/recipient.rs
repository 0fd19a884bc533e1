//! A recipient organisation as the federation directory describes it.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CountryCode, OrgId, ParseError, RecipientKind};

/// Services an organisation offers, as listed in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    ReturnAssistance,
    ReintegrationAssistance,
    FamilyTracing,
    HealthCare,
    MentalHealth,
    Shelter,
    Education,
    Livelihood,
    LegalAid,
    ChildProtection,
    Documentation,
}

impl Service {
    pub const ALL: &'static [Service] = &[
        Service::ReturnAssistance,
        Service::ReintegrationAssistance,
        Service::FamilyTracing,
        Service::HealthCare,
        Service::MentalHealth,
        Service::Shelter,
        Service::Education,
        Service::Livelihood,
        Service::LegalAid,
        Service::ChildProtection,
        Service::Documentation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::ReturnAssistance => "return_assistance",
            Service::ReintegrationAssistance => "reintegration_assistance",
            Service::FamilyTracing => "family_tracing",
            Service::HealthCare => "health_care",
            Service::MentalHealth => "mental_health",
            Service::Shelter => "shelter",
            Service::Education => "education",
            Service::Livelihood => "livelihood",
            Service::LegalAid => "legal_aid",
            Service::ChildProtection => "child_protection",
            Service::Documentation => "documentation",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Service {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .iter()
            .copied()
            .find(|s| s.as_str() == text)
            .ok_or(ParseError::new("service", "not a known value"))
    }
}

/// A recipient organisation. `state_actor` is the effective flag: a government
/// kind is always a state actor, whatever the directory entry says.
///
/// `country` is where it sits (behind which gateway); `state` is the state it
/// acts for. They differ for consulates and embassies: a Nigerian consulate in
/// Rome sits in ITA but is a state actor of NGA.
///
/// `end_to_end_key` says whether the organisation publishes, in the
/// directory, an encryption key of its own that is valid now: packets to it
/// can then be sealed end to end, past the gateway that routes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Recipient {
    pub id: OrgId,
    pub country: CountryCode,
    state: CountryCode,
    pub kind: RecipientKind,
    state_actor: bool,
    pub services: BTreeSet<Service>,
    end_to_end_key: bool,
}

impl Recipient {
    pub fn new(
        id: OrgId,
        country: CountryCode,
        kind: RecipientKind,
        listed_as_state_actor: bool,
        services: BTreeSet<Service>,
    ) -> Self {
        Self {
            id,
            country,
            state: country,
            kind,
            state_actor: listed_as_state_actor || kind.is_state_actor(),
            services,
            end_to_end_key: false,
        }
    }

    /// The same organisation, publishing (or not) an end-to-end encryption
    /// key valid now. Without this call, a recipient has none.
    pub fn with_end_to_end_key(self, has_key: bool) -> Self {
        Self { end_to_end_key: has_key, ..self }
    }

    /// Whether the organisation publishes an end-to-end encryption key valid now.
    pub fn has_end_to_end_key(&self) -> bool {
        self.end_to_end_key
    }

    /// The same organisation, acting for another state than the one it sits in.
    pub fn representing(self, state: CountryCode) -> Self {
        Self { state, ..self }
    }

    pub fn state(&self) -> CountryCode {
        self.state
    }

    pub fn is_state_actor(&self) -> bool {
        self.state_actor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(kind: RecipientKind, listed: bool) -> Recipient {
        Recipient::new(OrgId::parse("eri-org").unwrap(), CountryCode::parse("ERI").unwrap(), kind, listed, BTreeSet::new())
    }

    #[test]
    fn a_directory_can_mark_a_state_actor_but_never_unmark_one() {
        assert!(make(RecipientKind::Immigration, false).is_state_actor());
        assert!(make(RecipientKind::HealthProvider, true).is_state_actor());
        assert!(!make(RecipientKind::Iom, false).is_state_actor());
    }

    #[test]
    fn a_consulate_acts_for_its_own_state() {
        let consulate = make(RecipientKind::Consular, false).representing(CountryCode::parse("NGA").unwrap());
        assert_eq!(consulate.country.as_str(), "ERI");
        assert_eq!(consulate.state().as_str(), "NGA");
    }

    #[test]
    fn a_recipient_has_no_end_to_end_key_unless_told() {
        let plain = make(RecipientKind::Ngo, false);
        assert!(!plain.has_end_to_end_key());
        let keyed = plain.clone().with_end_to_end_key(true);
        assert!(keyed.has_end_to_end_key());
        assert_ne!(keyed, plain, "recipients differing in their key are different recipients");
        assert!(!keyed.with_end_to_end_key(false).has_end_to_end_key());
        let consulate = make(RecipientKind::Consular, false).with_end_to_end_key(true).representing(CountryCode::parse("NGA").unwrap());
        assert!(consulate.has_end_to_end_key(), "representing keeps the key flag");
    }

    #[test]
    fn services_round_trip() {
        for service in Service::ALL {
            assert_eq!(service.as_str().parse::<Service>().ok(), Some(*service));
            assert_eq!(serde_json::to_value(service).unwrap(), serde_json::json!(service.as_str()));
        }
    }
}
