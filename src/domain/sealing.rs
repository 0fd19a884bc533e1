//! End-to-end sealing: which recipients a packet may reach only sealed to the
//! recipient organisation's own key, so that no gateway routing it can read it.
//!
//! Two sources say so:
//!
//! - the built-in rule `builtin.asylum_end_to_end`, which nobody can switch
//!   off: the case is asylum-linked and the recipient sits in one of the
//!   person's origin states or acts for one. The receiving gateway there is
//!   run by that state; it must not be able to read the case.
//! - the DPO's rules in `end_to_end.toml`, stored with the policy set.
//!
//! A recipient that must get a packet sealed end to end but publishes no key
//! in the directory gets nothing: `decide` denies with
//! `recipient_key_required`. Deciding this is pure; sealing is the caller's.
//!
//! ```toml
//! [[require]]
//! recipient_kinds = ["ngo", "health_provider"]   # optional: recipient kinds of the directory
//! countries = ["ERI", "NGA"]                      # optional: where the recipient sits (ISO 3166-1 alpha-3)
//! ```
//!
//! A rule matches a recipient when every list it gives holds the recipient's
//! value; a rule without lists matches every recipient.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::policy::{CaseFacts, PolicyProblem};
use super::recipient::Recipient;
use super::retention::{names, sanitised};
use super::{CountryCode, RecipientKind};

/// The one policy-set file that holds the DPO's end-to-end sealing rules.
pub const END_TO_END_FILE: &str = "end_to_end.toml";

/// The id of the built-in rule, as a decision names it.
pub const BUILTIN_END_TO_END_RULE: &str = "builtin.asylum_end_to_end";

/// One `[[require]]` rule of `end_to_end.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndToEndRule {
    /// `None`: every kind of recipient.
    pub recipient_kinds: Option<BTreeSet<RecipientKind>>,
    /// `None`: wherever the recipient sits.
    pub countries: Option<BTreeSet<CountryCode>>,
}

impl EndToEndRule {
    /// Whether this rule requires end-to-end sealing towards `recipient`.
    pub fn matches(&self, recipient: &Recipient) -> bool {
        self.recipient_kinds.as_ref().is_none_or(|kinds| kinds.contains(&recipient.kind))
            && self.countries.as_ref().is_none_or(|countries| countries.contains(&recipient.country))
    }
}

/// The DPO's end-to-end sealing rules, in file order; empty means none
/// (the built-in rule still applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndToEndRules {
    rules: Vec<EndToEndRule>,
}

/// Who requires a referral's packets to be sealed end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndToEndRequirement {
    /// The built-in rule [`BUILTIN_END_TO_END_RULE`].
    Builtin,
    /// The DPO's rule with this 1-based index in `end_to_end.toml`.
    Dpo(usize),
}

impl EndToEndRequirement {
    /// The rule's id: `builtin.asylum_end_to_end` or `end_to_end.toml#<n>`.
    pub fn rule_id(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for EndToEndRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Builtin => f.write_str(BUILTIN_END_TO_END_RULE),
            Self::Dpo(index) => write!(f, "{END_TO_END_FILE}#{index}"),
        }
    }
}

/// Whether packets of a case with `facts` to `recipient` must be sealed end
/// to end, and by which rule. The built-in rule wins when both apply; the
/// first matching DPO rule is named otherwise.
pub fn end_to_end_requirement(facts: &CaseFacts, recipient: &Recipient, rules: &EndToEndRules) -> Option<EndToEndRequirement> {
    if builtin_applies(facts, recipient) {
        return Some(EndToEndRequirement::Builtin);
    }
    rules.rules.iter().position(|rule| rule.matches(recipient)).map(|index| EndToEndRequirement::Dpo(index + 1))
}

/// `builtin.asylum_end_to_end`: an asylum-linked case, and a recipient that
/// sits in an origin state of the person or acts for one. Unlike the asylum
/// firewall, this holds for every recipient, state actor or not.
fn builtin_applies(facts: &CaseFacts, recipient: &Recipient) -> bool {
    facts.asylum_linked
        && (facts.origin_states.contains(&recipient.country) || facts.origin_states.contains(&recipient.state()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    require: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    recipient_kinds: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    countries: Option<Spanned<Vec<Spanned<String>>>>,
}

impl EndToEndRules {
    /// The rules of one file (`file` names it in problems). Every problem is
    /// located by line and column; messages never repeat a value from the text.
    pub fn parse(file: &str, text: &str) -> Result<Self, Vec<PolicyProblem>> {
        let locate = |span: Option<Range<usize>>, problem: String| PolicyProblem::at(file, text, span.map(|s| s.start), problem);
        let raw: RawFile = toml::from_str(text).map_err(|error| vec![locate(error.span(), sanitised(error.message()))])?;
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for raw_rule in raw.require {
            let recipient_kinds = list(&raw_rule.recipient_kinds, "recipient_kinds", &mut problems, &locate, |text| {
                text.parse::<RecipientKind>().map_err(|_| format!("recipient_kinds must hold only {}", names(RecipientKind::ALL)))
            });
            let countries = list(&raw_rule.countries, "countries", &mut problems, &locate, |text| {
                CountryCode::parse(text)
                    .map_err(|_| "countries must hold assigned ISO 3166-1 alpha-3 codes in upper case, e.g. NGA".to_owned())
            });
            if let (Ok(recipient_kinds), Ok(countries)) = (recipient_kinds, countries) {
                rules.push(EndToEndRule { recipient_kinds, countries });
            }
        }
        if problems.is_empty() { Ok(Self { rules }) } else { Err(problems) }
    }

    pub fn rules(&self) -> &[EndToEndRule] {
        &self.rules
    }
}

/// One optional list of a rule, each value read by `read`: `Ok(None)` when
/// the list is absent, `Err(())` when a problem was recorded (also used by
/// `override_rules`).
pub(super) fn list<T: Ord>(
    raw: &Option<Spanned<Vec<Spanned<String>>>>,
    key: &str,
    problems: &mut Vec<PolicyProblem>,
    locate: &dyn Fn(Option<Range<usize>>, String) -> PolicyProblem,
    read: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<BTreeSet<T>>, ()> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.get_ref().is_empty() {
        problems.push(locate(
            Some(raw.span()),
            format!("{key} must not be empty: leave it out to match every value, or name at least one"),
        ));
        return Err(());
    }
    let mut values = BTreeSet::new();
    let mut bad = false;
    for item in raw.get_ref() {
        match read(item.get_ref()) {
            Ok(value) => {
                values.insert(value);
            }
            Err(problem) => {
                problems.push(locate(Some(item.span()), problem));
                bad = true;
            }
        }
    }
    if bad { Err(()) } else { Ok(Some(values)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AsylumStatus, OrgId, Profile};

    const SHIPPED: &str = include_str!("../../config/policies/end_to_end.toml");

    fn country(code: &str) -> CountryCode {
        CountryCode::parse(code).unwrap()
    }

    fn recipient(kind: RecipientKind, sits_in: &str) -> Recipient {
        Recipient::new(OrgId::parse("some-org").unwrap(), country(sits_in), kind, false, BTreeSet::new())
    }

    fn facts(asylum_linked: bool, origin: &[&str]) -> CaseFacts {
        CaseFacts {
            asylum_linked,
            child: false,
            profiles: if asylum_linked { vec![Profile::Asylum(AsylumStatus::RejectedAsylumSeeker)] } else { Vec::new() },
            origin_states: origin.iter().map(|c| country(c)).collect(),
            consent_by_guardian: false,
            best_interests_determined: false,
            best_interests_recommend_return: false, best_interests_favour_family: false,
        }
    }

    fn parse(text: &str) -> EndToEndRules {
        EndToEndRules::parse(END_TO_END_FILE, text).unwrap()
    }

    #[test]
    fn a_good_file_parses_in_order() {
        let rules = parse(
            r#"
            # Health data is special-category.
            [[require]]
            recipient_kinds = ["health_provider", "ngo", "ngo"]

            [[require]]
            countries = ["ERI", "NGA"]

            [[require]]
            recipient_kinds = ["iom"]
            countries = ["ETH"]
            "#,
        );
        let expected = [
            EndToEndRule { recipient_kinds: Some([RecipientKind::HealthProvider, RecipientKind::Ngo].into()), countries: None },
            EndToEndRule { recipient_kinds: None, countries: Some([country("ERI"), country("NGA")].into()) },
            EndToEndRule { recipient_kinds: Some([RecipientKind::Iom].into()), countries: Some([country("ETH")].into()) },
        ];
        assert_eq!(rules.rules(), &expected);
        assert_eq!(parse("# nothing yet\n"), EndToEndRules::default());
        assert_eq!(parse("[[require]]\n").rules(), &[EndToEndRule { recipient_kinds: None, countries: None }]);
    }

    #[test]
    fn the_shipped_file_parses() {
        // The shipped rule is commented out: a recipient without a key would
        // otherwise get nothing until the directory lists keys.
        assert_eq!(EndToEndRules::parse(END_TO_END_FILE, SHIPPED).unwrap(), EndToEndRules::default());
        let example: String = SHIPPED
            .lines()
            .filter_map(|line| line.strip_prefix("# ").filter(|l| l.starts_with("[[require]]") || l.starts_with("recipient_kinds")))
            .map(|line| format!("{line}\n"))
            .collect();
        let rules = parse(&example);
        assert_eq!(rules.rules().len(), 1, "the example in the shipped file's comments: {example}");
        assert!(rules.rules().iter().all(|rule| rule.matches(&recipient(RecipientKind::HealthProvider, "NGA"))));
    }

    #[test]
    fn problems_are_located_and_name_no_value_from_the_file() {
        let problems = |text: &str| {
            let problems = EndToEndRules::parse(END_TO_END_FILE, text).unwrap_err();
            for problem in &problems {
                assert!(!problem.problem.contains("Amina"), "{problem}");
                assert_eq!(problem.file, END_TO_END_FILE);
            }
            problems.into_iter().map(|p| (p.line, p.column, p.problem)).collect::<Vec<_>>()
        };
        let only = |text: &str| {
            let found = problems(text);
            assert_eq!(found.len(), 1, "{found:?}");
            found.into_iter().next().unwrap()
        };

        let (line, column, text) = only("[[require]]\nrecipient_kinds = [\"ngo\", \"Amina Diallo\"]\n");
        assert_eq!((line, column), (2, 27));
        assert!(text.starts_with("recipient_kinds must hold only \"") && text.contains("\"health_provider\""), "{text}");

        let (line, column, text) = only("[[require]]\ncountries = [\"NGA\", \"Amina\"]\n");
        assert_eq!((line, column), (2, 21));
        assert!(text.starts_with("countries must hold assigned ISO 3166-1 alpha-3 codes"), "{text}");
        let (line, column, _) = only("[[require]]\ncountries = [\"nga\"]\n");
        assert_eq!((line, column), (2, 14));

        let (line, column, text) = only("[[require]]\nrecipient_kinds = []\n");
        assert_eq!((line, column), (2, 19));
        assert!(text.starts_with("recipient_kinds must not be empty"), "{text}");
        let (line, column, text) = only("\n[[require]]\nrecipient_kinds = [\"ngo\"]\ncountries = []\n");
        assert_eq!((line, column), (4, 13));
        assert!(text.starts_with("countries must not be empty"), "{text}");

        let (line, column, text) = only("[[require]]\nrecipient_kind = \"ngo\"\n");
        assert_eq!((line, column), (2, 1));
        assert!(text.contains("`recipient_kind`") && text.contains("`recipient_kinds`"), "{text}");
        let (line, _, text) = only("[[rule]]\ncountries = [\"NGA\"]\n");
        assert_eq!(line, 1);
        assert!(text.contains("`rule`"), "{text}");

        let (line, column, text) = only("[[require]]\ncountries = \"NGA\"\n");
        assert_eq!((line, column), (2, 13));
        assert!(text.contains("expected"), "{text}");
        let (line, _, text) = only("[[require]]\ncountries = [\"NGA\"]\n\n[[require]\ncountries = [\"Amina\n");
        assert_eq!(line, 4);
        assert!(!text.is_empty());

        // Every problem of the file at once, in order.
        let found = problems("[[require]]\ncountries = [\"XXX\", \"YYY\"]\n\n[[require]]\nrecipient_kinds = [\"pirates\"]\ncountries = []\n");
        let at: Vec<(usize, usize)> = found.iter().map(|(line, column, _)| (*line, *column)).collect();
        assert_eq!(at, [(2, 14), (2, 21), (5, 20), (6, 13)], "{found:?}");
    }

    #[test]
    fn a_rule_matches_when_every_list_it_gives_holds_the_recipient() {
        let rules = parse(
            "[[require]]\nrecipient_kinds = [\"health_provider\"]\n\n[[require]]\nrecipient_kinds = [\"ngo\", \"iom\"]\ncountries = [\"ERI\", \"NGA\"]\n",
        );
        let no_case = facts(false, &[]);
        let required = |kind, sits_in| end_to_end_requirement(&no_case, &recipient(kind, sits_in), &rules);
        assert_eq!(required(RecipientKind::HealthProvider, "ITA"), Some(EndToEndRequirement::Dpo(1)));
        assert_eq!(required(RecipientKind::Ngo, "NGA"), Some(EndToEndRequirement::Dpo(2)));
        assert_eq!(required(RecipientKind::Iom, "ERI"), Some(EndToEndRequirement::Dpo(2)));
        assert_eq!(required(RecipientKind::Iom, "ETH"), None, "the kind alone is not enough");
        assert_eq!(required(RecipientKind::Unhcr, "NGA"), None, "the country alone is not enough");
        // A consulate sits where it sits: `countries` is not the state it acts for.
        let consulate = recipient(RecipientKind::Ngo, "ITA").representing(country("NGA"));
        assert_eq!(end_to_end_requirement(&no_case, &consulate, &rules), None);

        let everyone = parse("[[require]]\n");
        assert_eq!(end_to_end_requirement(&no_case, &recipient(RecipientKind::Police, "ITA"), &everyone), Some(EndToEndRequirement::Dpo(1)));
        let none = EndToEndRules::default();
        assert_eq!(end_to_end_requirement(&no_case, &recipient(RecipientKind::HealthProvider, "NGA"), &none), None);
    }

    #[test]
    fn the_builtin_rule_covers_asylum_linked_cases_towards_an_origin_state() {
        let none = EndToEndRules::default();
        let asylum_nga = facts(true, &["NGA"]);
        let required = |facts: &CaseFacts, recipient: &Recipient| end_to_end_requirement(facts, recipient, &none);

        // Any recipient sitting in an origin state, state actor or not.
        assert_eq!(required(&asylum_nga, &recipient(RecipientKind::Iom, "NGA")), Some(EndToEndRequirement::Builtin));
        assert_eq!(required(&asylum_nga, &recipient(RecipientKind::HealthProvider, "NGA")), Some(EndToEndRequirement::Builtin));
        assert_eq!(required(&facts(true, &["ETH", "ERI"]), &recipient(RecipientKind::Unhcr, "ERI")), Some(EndToEndRequirement::Builtin));
        // A consulate acting for an origin state, wherever it sits.
        let consulate = recipient(RecipientKind::Consular, "ITA").representing(country("NGA"));
        assert_eq!(required(&asylum_nga, &consulate), Some(EndToEndRequirement::Builtin));
        // Not asylum-linked: the same recipients need nothing.
        assert_eq!(required(&facts(false, &["NGA"]), &recipient(RecipientKind::Iom, "NGA")), None);
        assert_eq!(required(&facts(false, &["NGA"]), &consulate), None);
        // Asylum-linked, but the recipient is elsewhere and acts for no origin state.
        assert_eq!(required(&asylum_nga, &recipient(RecipientKind::Iom, "GMB")), None);
        assert_eq!(required(&asylum_nga, &recipient(RecipientKind::Unhcr, "ITA")), None);
        let other_consulate = recipient(RecipientKind::Consular, "ITA").representing(country("GMB"));
        assert_eq!(required(&asylum_nga, &other_consulate), None);
        // A key changes whether the recipient can be reached, not the requirement.
        assert_eq!(required(&asylum_nga, &recipient(RecipientKind::Iom, "NGA").with_end_to_end_key(true)), Some(EndToEndRequirement::Builtin));
    }

    #[test]
    fn the_builtin_rule_wins_and_no_dpo_file_switches_it_off() {
        let rules = parse("[[require]]\nrecipient_kinds = [\"iom\"]\n");
        let iom_nga = recipient(RecipientKind::Iom, "NGA");
        assert_eq!(end_to_end_requirement(&facts(true, &["NGA"]), &iom_nga, &rules), Some(EndToEndRequirement::Builtin));
        assert_eq!(end_to_end_requirement(&facts(false, &["NGA"]), &iom_nga, &rules), Some(EndToEndRequirement::Dpo(1)));
        for text in ["", "[[require]]\ncountries = [\"ITA\"]\n"] {
            assert_eq!(end_to_end_requirement(&facts(true, &["NGA"]), &iom_nga, &parse(text)), Some(EndToEndRequirement::Builtin));
        }
    }

    #[test]
    fn requirements_are_named_by_rule_id() {
        assert_eq!(EndToEndRequirement::Builtin.rule_id(), "builtin.asylum_end_to_end");
        assert_eq!(EndToEndRequirement::Dpo(3).rule_id(), "end_to_end.toml#3");
    }
}
