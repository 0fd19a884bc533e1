//! Informed consent, modelled on the FHIR Consent provision tree: grants
//! (scopes) and refusals by purpose, data category and recipient, each grant
//! limited in time. Refusals override grants; a withdrawal ends everything.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::case::GuardianRole;
use super::onward::OnwardGrant;
use super::recipient::Recipient;
use super::text::ShortText;
use super::{CountryCode, DataCategory, LanguageCode, OrgId, ParseError, Purpose, RecipientKind};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    pub given_by: ConsentGiver,
    pub method: ConsentMethod,
    pub given_at: DateTime<Utc>,
    /// The language in which the person was informed, when it was not the form's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub informed_in_language: Option<LanguageCode>,
    #[schemars(length(max = 50))]
    #[serde(deserialize_with = "super::unique::list_of_at_most::<_, _, 50>")]
    pub scopes: Vec<Scope>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::unique::list_of_at_most::<_, _, 50>")]
    #[schemars(length(max = 50))]
    pub refusals: Vec<Refusal>,
    /// Once set, nothing may leave under this consent any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn_at: Option<DateTime<Utc>>,
}

/// Who consented. A child's consent is valid only when given with a guardian.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConsentGiver {
    // An empty struct variant so that unknown keys next to the tag are refused.
    Subject {},
    Guardian {
        role: GuardianRole,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        given_names: Option<ShortText>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        family_name: Option<ShortText>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        organisation: Option<ShortText>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentMethod {
    Written,
    Verbal,
}

/// Which categories a scope covers. `all` never includes `case_notes` or
/// `asylum`: free-text notes and the asylum history leave only when a scope
/// names them, so that a broad "share my file" consent cannot carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CategorySelection {
    All(AllCategories),
    Listed(#[schemars(length(min = 1))] #[serde(deserialize_with = "super::unique::set")] BTreeSet<DataCategory>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllCategories {
    All,
}

impl CategorySelection {
    fn covers(&self, category: DataCategory) -> bool {
        match self {
            Self::All(_) => !matches!(category, DataCategory::CaseNotes | DataCategory::Asylum),
            Self::Listed(listed) => listed.contains(&category),
        }
    }

    fn names(&self, category: DataCategory) -> bool {
        matches!(self, Self::Listed(listed) if listed.contains(&category))
    }
}

/// A recipient named by organisation, kind or country; every field given must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RecipientSelectorFields", deny_unknown_fields)]
pub struct RecipientSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    organisation: Option<OrgId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<RecipientKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    country: Option<CountryCode>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RecipientSelector", extend("minProperties" = 1))]
struct RecipientSelectorFields {
    organisation: Option<OrgId>,
    kind: Option<RecipientKind>,
    country: Option<CountryCode>,
}

impl TryFrom<RecipientSelectorFields> for RecipientSelector {
    type Error = ParseError;
    fn try_from(fields: RecipientSelectorFields) -> Result<Self, Self::Error> {
        RecipientSelector::new(fields.organisation, fields.kind, fields.country)
    }
}

impl RecipientSelector {
    pub fn new(
        organisation: Option<OrgId>,
        kind: Option<RecipientKind>,
        country: Option<CountryCode>,
    ) -> Result<Self, ParseError> {
        if organisation.is_none() && kind.is_none() && country.is_none() {
            return Err(ParseError::new("recipient", "name at least one of organisation, kind or country"));
        }
        Ok(Self { organisation, kind, country })
    }

    /// For a grant: a country names organisations that both sit in it and act
    /// for it, so consent to "organisations in Italy" never reaches a foreign
    /// consulate in Rome.
    pub fn grants_to(&self, recipient: &Recipient) -> bool {
        self.matches(recipient, |country| country == recipient.country && country == recipient.state())
    }

    /// For a refusal: a country names organisations that sit in it or act for
    /// it, so refusing Nigeria also refuses Nigeria's consulate in Rome.
    pub fn refuses(&self, recipient: &Recipient) -> bool {
        self.matches(recipient, |country| country == recipient.country || country == recipient.state())
    }

    fn matches(&self, recipient: &Recipient, country_matches: impl Fn(CountryCode) -> bool) -> bool {
        self.organisation.as_ref().is_none_or(|id| *id == recipient.id)
            && self.kind.is_none_or(|kind| kind == recipient.kind)
            && self.country.is_none_or(country_matches)
    }
}

/// A grant: these purposes, these categories, these recipients, for this period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "ScopeFields", deny_unknown_fields)]
pub struct Scope {
    purposes: BTreeSet<Purpose>,
    categories: CategorySelection,
    recipients: Vec<RecipientSelector>,
    /// Defaults to the time consent was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    valid_from: Option<DateTime<Utc>>,
    valid_until: DateTime<Utc>,
    /// Whether the recipient may pass what this scope covers on to other
    /// organisations (onward referral), and to which; absent: it may not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    onward: Option<OnwardConsent>,
}

/// The person's consent to an onward referral: the recipient may pass what
/// the scope covers, for the scope's purposes and until its end, to these
/// kinds of organisation; in its own country only unless `leave_country`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnwardConsent {
    /// Kinds of organisation it may be passed on to (`health_provider`, `ngo`, ...).
    #[schemars(length(min = 1))]
    #[serde(deserialize_with = "super::unique::non_empty_set")]
    pub recipient_kinds: BTreeSet<RecipientKind>,
    /// May it be passed on to an organisation outside the recipient's country? Default: no.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leave_country: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Scope")]
struct ScopeFields {
    #[schemars(length(min = 1))]
    #[serde(deserialize_with = "super::unique::set")]
    purposes: BTreeSet<Purpose>,
    categories: CategorySelection,
    #[schemars(length(min = 1, max = 50))]
    #[serde(deserialize_with = "super::unique::list_of_at_most::<_, _, 50>")]
    recipients: Vec<RecipientSelector>,
    /// Defaults to the time consent was given.
    valid_from: Option<DateTime<Utc>>,
    valid_until: DateTime<Utc>,
    /// May the recipient pass it on, and to which kinds of organisation? Absent: no.
    onward: Option<OnwardConsent>,
}

impl TryFrom<ScopeFields> for Scope {
    type Error = ParseError;
    fn try_from(f: ScopeFields) -> Result<Self, Self::Error> {
        Ok(Scope::new(f.purposes, f.categories, f.recipients, f.valid_from, f.valid_until)?.with_onward(f.onward))
    }
}

impl Scope {
    pub fn new(
        purposes: BTreeSet<Purpose>,
        categories: CategorySelection,
        recipients: Vec<RecipientSelector>,
        valid_from: Option<DateTime<Utc>>,
        valid_until: DateTime<Utc>,
    ) -> Result<Self, ParseError> {
        if purposes.is_empty() {
            return Err(ParseError::new("consent scope", "purposes must name at least one purpose"));
        }
        if matches!(&categories, CategorySelection::Listed(listed) if listed.is_empty()) {
            return Err(ParseError::new("consent scope", "categories must name at least one category, or be \"all\""));
        }
        if recipients.is_empty() {
            return Err(ParseError::new("consent scope", "recipients must name at least one recipient"));
        }
        if valid_from.is_some_and(|from| from >= valid_until) {
            return Err(ParseError::new("consent scope", "valid_until must be later than valid_from"));
        }
        Ok(Self { purposes, categories, recipients, valid_from, valid_until, onward: None })
    }

    /// The scope, letting the recipient pass it on as `onward` says.
    pub fn with_onward(self, onward: Option<OnwardConsent>) -> Self {
        Self { onward, ..self }
    }

    pub fn valid_until(&self) -> DateTime<Utc> {
        self.valid_until
    }

    pub fn purposes(&self) -> &BTreeSet<Purpose> {
        &self.purposes
    }

    /// Whether, and to which kinds, the recipient may pass it on.
    pub fn onward(&self) -> Option<&OnwardConsent> {
        self.onward.as_ref()
    }

    fn applies_to(&self, purpose: Purpose, category: DataCategory, recipient: &Recipient) -> bool {
        self.purposes.contains(&purpose)
            && self.categories.covers(category)
            && self.recipients.iter().any(|r| r.grants_to(recipient))
    }
}

/// An explicit "no". Every field left out means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", deserialize_with = "super::unique::set")]
    pub purposes: BTreeSet<Purpose>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty", deserialize_with = "super::unique::set")]
    pub categories: BTreeSet<DataCategory>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::unique::list_of_at_most::<_, _, 50>")]
    #[schemars(length(max = 50))]
    pub recipients: Vec<RecipientSelector>,
}

impl Refusal {
    /// Whether a selector of it names a country other than `country`.
    pub fn names_a_country_other_than(&self, country: CountryCode) -> bool {
        self.recipients.iter().any(|r| r.country.is_some_and(|c| c != country))
    }

    /// The organisations its selectors name.
    pub fn named_organisations(&self) -> impl Iterator<Item = &OrgId> {
        self.recipients.iter().filter_map(|r| r.organisation.as_ref())
    }

    pub fn applies_to(&self, purpose: Purpose, category: DataCategory, recipient: &Recipient) -> bool {
        (self.purposes.is_empty() || self.purposes.contains(&purpose))
            && (self.categories.is_empty() || self.categories.contains(&category))
            && (self.recipients.is_empty() || self.recipients.iter().any(|r| r.refuses(recipient)))
    }
}

/// What the consent says about sharing one category with one recipient for one purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Covered by a scope valid now; `named` when that scope lists the category
    /// explicitly, and `until` the latest end among the covering scopes.
    Granted { named: bool, until: DateTime<Utc> },
    Withdrawn,
    Refused,
    /// Scopes would cover it, but all have ended.
    Expired,
    /// Scopes would cover it, but none has started yet.
    NotYetValid,
    NotGiven,
}

impl Consent {
    pub fn is_by_guardian(&self) -> bool {
        matches!(self.given_by, ConsentGiver::Guardian { .. })
    }

    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    pub fn coverage(&self, purpose: Purpose, category: DataCategory, recipient: &Recipient, now: DateTime<Utc>) -> Coverage {
        if self.withdrawn_at.is_some() {
            return Coverage::Withdrawn;
        }
        if self.refusals.iter().any(|r| r.applies_to(purpose, category, recipient)) {
            return Coverage::Refused;
        }
        let mut expired = false;
        let mut not_yet_valid = false;
        let mut granted: Option<(bool, DateTime<Utc>)> = None;
        for scope in self.scopes.iter().filter(|s| s.applies_to(purpose, category, recipient)) {
            let from = scope.valid_from.unwrap_or(self.given_at);
            if now < from {
                not_yet_valid = true;
            } else if now >= scope.valid_until {
                expired = true;
            } else {
                let named = scope.categories.names(category);
                granted = Some(match granted {
                    Some((was_named, until)) => (was_named || named, until.max(scope.valid_until)),
                    None => (named, scope.valid_until),
                });
            }
        }
        match granted {
            Some((named, until)) => Coverage::Granted { named, until },
            None if expired => Coverage::Expired,
            None if not_yet_valid => Coverage::NotYetValid,
            None => Coverage::NotGiven,
        }
    }

    /// What the recipient may pass on of `sent` (the categories a referral
    /// to it for `purpose` carries), one grant per scope in force that
    /// covers the referral and lets it go onward: the categories of `sent`
    /// the scope covers and no refusal holds back, the scope's purposes and
    /// end, and the kinds it names; with the categories the scope names.
    /// Nothing once withdrawn.
    pub fn onward_grants(&self, purpose: Purpose, recipient: &Recipient, sent: &BTreeSet<DataCategory>, now: DateTime<Utc>) -> Vec<(OnwardGrant, BTreeSet<DataCategory>)> {
        if self.withdrawn_at.is_some() {
            return Vec::new();
        }
        self.scopes
            .iter()
            .filter(|scope| scope.valid_from.unwrap_or(self.given_at) <= now && now < scope.valid_until)
            .filter(|scope| scope.purposes.contains(&purpose) && scope.recipients.iter().any(|r| r.grants_to(recipient)))
            .filter_map(|scope| {
                let onward = scope.onward.as_ref()?;
                let categories: BTreeSet<DataCategory> = sent
                    .iter()
                    .copied()
                    .filter(|c| scope.categories.covers(*c) && !self.refusals.iter().any(|r| r.applies_to(purpose, *c, recipient)))
                    .collect();
                let named = categories.iter().copied().filter(|c| scope.categories.names(*c)).collect();
                let grant = OnwardGrant {
                    categories,
                    purposes: scope.purposes.clone(),
                    recipient_kinds: onward.recipient_kinds.clone(),
                    until: scope.valid_until,
                };
                (!grant.categories.is_empty()).then_some((grant, named))
            })
            .collect()
    }

    /// Until when the consent covers every one of `categories` for this
    /// purpose and recipient: the earliest of their ends. `None` when one
    /// of them is not covered now (or there are none).
    pub fn covers_all_until(
        &self,
        purpose: Purpose,
        categories: impl IntoIterator<Item = DataCategory>,
        recipient: &Recipient,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut earliest: Option<DateTime<Utc>> = None;
        for category in categories {
            let Coverage::Granted { until, .. } = self.coverage(purpose, category, recipient, now) else {
                return None;
            };
            earliest = Some(earliest.map_or(until, |e| e.min(until)));
        }
        earliest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0).unwrap()
    }

    fn recipient(id: &str, kind: RecipientKind, country: &str) -> Recipient {
        Recipient::new(OrgId::parse(id).unwrap(), CountryCode::parse(country).unwrap(), kind, false, BTreeSet::new())
    }

    fn by_org(id: &str) -> RecipientSelector {
        RecipientSelector::new(Some(OrgId::parse(id).unwrap()), None, None).unwrap()
    }

    fn consent(scopes: Vec<Scope>, refusals: Vec<Refusal>) -> Consent {
        Consent {
            given_by: ConsentGiver::Subject {},
            method: ConsentMethod::Written,
            given_at: at(1),
            informed_in_language: None,
            scopes,
            refusals,
            withdrawn_at: None,
        }
    }

    fn scope(categories: CategorySelection, recipients: Vec<RecipientSelector>, from: Option<u32>, until: u32) -> Scope {
        Scope::new([Purpose::Return].into(), categories, recipients, from.map(at), at(until)).unwrap()
    }

    fn listed(categories: &[DataCategory]) -> CategorySelection {
        CategorySelection::Listed(categories.iter().copied().collect())
    }

    const ALL: CategorySelection = CategorySelection::All(AllCategories::All);

    #[test]
    fn granted_within_period_for_matching_recipient_only() {
        let iom = recipient("nga-iom-lagos", RecipientKind::Iom, "NGA");
        let other = recipient("nga-ngo-one", RecipientKind::Ngo, "NGA");
        let c = consent(vec![scope(listed(&[DataCategory::Identity]), vec![by_org("nga-iom-lagos")], None, 20)], vec![]);
        assert_eq!(c.coverage(Purpose::Return, DataCategory::Identity, &iom, at(10)), Coverage::Granted { named: true, until: at(20) });
        assert_eq!(c.coverage(Purpose::Return, DataCategory::Identity, &other, at(10)), Coverage::NotGiven);
        assert_eq!(c.coverage(Purpose::Return, DataCategory::Health, &iom, at(10)), Coverage::NotGiven);
        assert_eq!(c.coverage(Purpose::Reintegration, DataCategory::Identity, &iom, at(10)), Coverage::NotGiven);
        assert_eq!(c.coverage(Purpose::Return, DataCategory::Identity, &iom, at(20)), Coverage::Expired);
        assert_eq!(c.coverage(Purpose::Return, DataCategory::Identity, &iom, at(25)), Coverage::Expired);
    }

    #[test]
    fn covers_all_until_is_the_earliest_end_among_the_categories() {
        let iom = recipient("nga-iom-lagos", RecipientKind::Iom, "NGA");
        let c = consent(
            vec![
                scope(listed(&[DataCategory::Identity]), vec![by_org("nga-iom-lagos")], None, 20),
                scope(listed(&[DataCategory::Health]), vec![by_org("nga-iom-lagos")], None, 15),
            ],
            vec![],
        );
        let both = [DataCategory::Identity, DataCategory::Health];
        assert_eq!(c.covers_all_until(Purpose::Return, both, &iom, at(10)), Some(at(15)));
        assert_eq!(c.covers_all_until(Purpose::Return, [DataCategory::Identity], &iom, at(10)), Some(at(20)));
        // One category no longer covered: no answer rather than a wrong one.
        assert_eq!(c.covers_all_until(Purpose::Return, both, &iom, at(16)), None);
        assert_eq!(c.covers_all_until(Purpose::Return, [DataCategory::Family], &iom, at(10)), None);
        assert_eq!(c.covers_all_until(Purpose::Return, [], &iom, at(10)), None);
    }

    #[test]
    fn not_yet_valid_before_valid_from() {
        let iom = recipient("nga-iom-lagos", RecipientKind::Iom, "NGA");
        let c = consent(vec![scope(ALL, vec![by_org("nga-iom-lagos")], Some(5), 20)], vec![]);
        assert_eq!(c.coverage(Purpose::Return, DataCategory::Identity, &iom, at(3)), Coverage::NotYetValid);
        assert!(matches!(c.coverage(Purpose::Return, DataCategory::Identity, &iom, at(5)), Coverage::Granted { named: false, .. }));
    }

    #[test]
    fn all_categories_never_covers_asylum() {
        let iom = recipient("ita-iom-rome", RecipientKind::Iom, "ITA");
        let c = consent(vec![scope(ALL, vec![by_org("ita-iom-rome")], None, 20)], vec![]);
        assert_eq!(c.coverage(Purpose::Return, DataCategory::Asylum, &iom, at(10)), Coverage::NotGiven);
        let named = consent(vec![scope(listed(&[DataCategory::Asylum]), vec![by_org("ita-iom-rome")], None, 20)], vec![]);
        assert!(matches!(named.coverage(Purpose::Return, DataCategory::Asylum, &iom, at(10)), Coverage::Granted { named: true, .. }));
    }

    #[test]
    fn all_categories_never_covers_case_notes() {
        let iom = recipient("nga-iom-lagos", RecipientKind::Iom, "NGA");
        let c = consent(vec![scope(ALL, vec![by_org("nga-iom-lagos")], None, 20)], vec![]);
        assert_eq!(c.coverage(Purpose::Return, DataCategory::CaseNotes, &iom, at(10)), Coverage::NotGiven);
        let named = consent(vec![scope(listed(&[DataCategory::CaseNotes]), vec![by_org("nga-iom-lagos")], None, 20)], vec![]);
        assert!(matches!(named.coverage(Purpose::Return, DataCategory::CaseNotes, &iom, at(10)), Coverage::Granted { named: true, .. }));
    }

    #[test]
    fn refusal_overrides_grant_and_withdrawal_overrides_everything() {
        let ministry = recipient("eri-immigration", RecipientKind::Immigration, "ERI");
        let by_country = RecipientSelector::new(None, None, Some(CountryCode::parse("ERI").unwrap())).unwrap();
        let mut c = consent(
            vec![scope(ALL, vec![by_country.clone()], None, 20)],
            vec![Refusal { recipients: vec![RecipientSelector::new(None, Some(RecipientKind::Immigration), None).unwrap()], ..Refusal::default() }],
        );
        assert_eq!(c.coverage(Purpose::Return, DataCategory::Identity, &ministry, at(10)), Coverage::Refused);
        c.refusals.clear();
        assert!(matches!(c.coverage(Purpose::Return, DataCategory::Identity, &ministry, at(10)), Coverage::Granted { .. }));
        c.withdrawn_at = Some(at(9));
        assert_eq!(c.coverage(Purpose::Return, DataCategory::Identity, &ministry, at(10)), Coverage::Withdrawn);
    }

    #[test]
    fn selectors_need_a_field_and_all_given_fields_must_match() {
        assert!(RecipientSelector::new(None, None, None).is_err());
        let iom_in_nga = RecipientSelector::new(None, Some(RecipientKind::Iom), Some(CountryCode::parse("NGA").unwrap())).unwrap();
        assert!(iom_in_nga.grants_to(&recipient("nga-iom-lagos", RecipientKind::Iom, "NGA")));
        assert!(!iom_in_nga.grants_to(&recipient("gha-iom-accra", RecipientKind::Iom, "GHA")));
        assert!(!iom_in_nga.grants_to(&recipient("nga-ngo-one", RecipientKind::Ngo, "NGA")));
    }

    #[test]
    fn a_consulate_is_refused_with_its_state_and_never_granted_with_its_host() {
        let consulate = recipient("nga-consulate-rome", RecipientKind::Consular, "ITA").representing(CountryCode::parse("NGA").unwrap());
        let nigeria = RecipientSelector::new(None, None, Some(CountryCode::parse("NGA").unwrap())).unwrap();
        let italy = RecipientSelector::new(None, None, Some(CountryCode::parse("ITA").unwrap())).unwrap();
        assert!(nigeria.refuses(&consulate));
        assert!(italy.refuses(&consulate));
        assert!(!nigeria.grants_to(&consulate));
        assert!(!italy.grants_to(&consulate));
        let refusing_nigeria = consent(vec![scope(ALL, vec![italy], None, 20)], vec![Refusal { recipients: vec![nigeria], ..Refusal::default() }]);
        assert_eq!(refusing_nigeria.coverage(Purpose::Return, DataCategory::Identity, &consulate, at(10)), Coverage::Refused);
        let by_name = RecipientSelector::new(Some(OrgId::parse("nga-consulate-rome").unwrap()), None, None).unwrap();
        assert!(by_name.grants_to(&consulate));
    }

    #[test]
    fn malformed_scopes_are_refused_when_parsed() {
        let base = r#"{"purposes": ["return"], "categories": ["identity"], "recipients": [{"kind": "iom"}], "valid_until": "2027-01-01T00:00:00Z"}"#;
        assert!(serde_json::from_str::<Scope>(base).is_ok());
        for bad in [
            r#"{"purposes": [], "categories": ["identity"], "recipients": [{"kind": "iom"}], "valid_until": "2027-01-01T00:00:00Z"}"#,
            r#"{"purposes": ["return"], "categories": [], "recipients": [{"kind": "iom"}], "valid_until": "2027-01-01T00:00:00Z"}"#,
            r#"{"purposes": ["return"], "categories": ["identity"], "recipients": [], "valid_until": "2027-01-01T00:00:00Z"}"#,
            r#"{"purposes": ["return"], "categories": ["identity"], "recipients": [{}], "valid_until": "2027-01-01T00:00:00Z"}"#,
            r#"{"purposes": ["return"], "categories": ["identity"], "recipients": [{"kind": "iom"}]}"#,
            r#"{"purposes": ["return"], "categories": ["identity"], "recipients": [{"kind": "iom"}], "valid_from": "2027-02-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z"}"#,
            r#"{"purposes": ["return"], "categories": ["identity", "biometrics"], "recipients": [{"kind": "iom"}], "valid_until": "2027-01-01T00:00:00Z"}"#,
            r#"{"purposes": ["return"], "categories": "everything", "recipients": [{"kind": "iom"}], "valid_until": "2027-01-01T00:00:00Z"}"#,
            r#"{"purposes": ["return"], "categories": ["identity"], "recipients": [{"kind": "iom"}], "valid_until": "2027-01-01T00:00:00Z", "extra": 1}"#,
            r#"{"purposes": ["return"], "categories": ["identity"], "recipients": [{"kind": "iom"}], "valid_until": "2027-01-01T00:00:00Z", "onward": {"recipient_kinds": []}}"#,
            r#"{"purposes": ["return"], "categories": ["identity"], "recipients": [{"kind": "iom"}], "valid_until": "2027-01-01T00:00:00Z", "onward": {"recipient_kinds": ["ngo", "ngo"]}}"#,
            r#"{"purposes": ["return"], "categories": ["identity"], "recipients": [{"kind": "iom"}], "valid_until": "2027-01-01T00:00:00Z", "onward": {"recipient_kinds": ["ngo"], "to": "anyone"}}"#,
            r#"{"purposes": ["return"], "categories": ["identity"], "recipients": [{"kind": "iom"}], "valid_until": "2027-01-01T00:00:00Z", "onward": {}}"#,
        ] {
            assert!(serde_json::from_str::<Scope>(bad).is_err(), "{bad}");
        }
        let onward = r#"{"purposes": ["return"], "categories": ["identity"], "recipients": [{"kind": "iom"}], "valid_until": "2027-01-01T00:00:00Z", "onward": {"recipient_kinds": ["ngo"]}}"#;
        let scope: Scope = serde_json::from_str(onward).unwrap();
        assert_eq!(scope.onward(), Some(&OnwardConsent { recipient_kinds: [RecipientKind::Ngo].into(), leave_country: false }));
        // Said as given: leave_country false is left out, as the default.
        assert_eq!(serde_json::to_value(&scope).unwrap()["onward"], serde_json::json!({ "recipient_kinds": ["ngo"] }));
    }

    #[test]
    fn onward_grants_follow_the_scopes_that_let_the_case_go_on() {
        let iom = recipient("nga-iom-lagos", RecipientKind::Iom, "NGA");
        let health_onward = OnwardConsent { recipient_kinds: [RecipientKind::HealthProvider].into(), leave_country: false };
        let shelter_onward = OnwardConsent { recipient_kinds: [RecipientKind::Ngo].into(), leave_country: true };
        let mut given = consent(
            vec![
                scope(listed(&[DataCategory::Identity, DataCategory::Health]), vec![by_org("nga-iom-lagos")], None, 20).with_onward(Some(health_onward.clone())),
                scope(ALL, vec![by_org("nga-iom-lagos")], None, 25).with_onward(Some(shelter_onward)),
                // Covers the referral but says nothing of onward: no grant.
                scope(ALL, vec![by_org("nga-iom-lagos")], None, 28),
                // Onward, but for another recipient.
                scope(ALL, vec![by_org("gmb-iom-banjul")], None, 28).with_onward(Some(health_onward)),
            ],
            vec![Refusal { categories: [DataCategory::Contact].into(), ..Refusal::default() }],
        );
        let sent: BTreeSet<DataCategory> = [DataCategory::Identity, DataCategory::Contact, DataCategory::Health].into();
        let grants = given.onward_grants(Purpose::Return, &iom, &sent, at(10));
        type Summary = (Vec<DataCategory>, Vec<RecipientKind>, DateTime<Utc>);
        let summary: Vec<Summary> = grants
            .iter()
            .map(|(g, _)| (g.categories.iter().copied().collect(), g.recipient_kinds.iter().copied().collect(), g.until))
            .collect();
        let named: Vec<&BTreeSet<DataCategory>> = grants.iter().map(|(_, named)| named).collect();
        assert_eq!(named, [&[DataCategory::Identity, DataCategory::Health].into(), &BTreeSet::new()], "what each scope lists by name");
        assert_eq!(
            summary,
            [
                (vec![DataCategory::Identity, DataCategory::Health], vec![RecipientKind::HealthProvider], at(20)),
                // `all` covers health too; the refusal holds contact back.
                (vec![DataCategory::Identity, DataCategory::Health], vec![RecipientKind::Ngo], at(25)),
            ]
        );
        assert!(grants.iter().all(|(g, _)| g.purposes == [Purpose::Return].into()));
        // Another purpose, an ended scope, a withdrawal: nothing.
        assert!(given.onward_grants(Purpose::Reintegration, &iom, &sent, at(10)).is_empty());
        assert_eq!(given.onward_grants(Purpose::Return, &iom, &sent, at(22)).len(), 1);
        given.withdrawn_at = Some(at(5));
        assert!(given.onward_grants(Purpose::Return, &iom, &sent, at(10)).is_empty());
    }
}
