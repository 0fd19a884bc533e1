//! The DPO's standing rules for emergency overrides (`overrides.toml`,
//! stored and signed off with the policy set): which overrides take effect
//! at once, without waiting for a DPO's approval (issue 21 §4).
//!
//! A standing rule applies only to a referral of `emergency` priority (a
//! response within 24 hours leaves no time to wait for a DPO at night), and
//! only to an override that would otherwise be allowed: it replaces the
//! second person's approval, never what `emergency_override` decides an
//! override may release. Without the file, or with no rule in it, every
//! override waits for a DPO.
//!
//! ```toml
//! [[standing]]
//! reasons = ["life_threatening"]               # optional: override reasons
//! purposes = ["return"]                        # optional: return, reintegration, family_tracing
//! recipient_kinds = ["health_provider", "iom"] # optional: recipient kinds of the directory
//! ```
//!
//! A rule matches when every list it gives holds the referral's value; a
//! rule without lists matches every emergency override. The first matching
//! rule is named (`overrides.toml#<n>`, counted from 1).

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::emergency_override::OverrideReason;
use super::policy::PolicyProblem;
use super::priority::Priority;
use super::recipient::Recipient;
use super::retention::{names, sanitised};
use super::sealing::list;
use super::{Purpose, RecipientKind};

/// The one policy-set file that holds the DPO's standing override rules.
pub const OVERRIDES_FILE: &str = "overrides.toml";

/// One `[[standing]]` rule of `overrides.toml`; `None`: every value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandingRule {
    pub reasons: Option<BTreeSet<OverrideReason>>,
    pub purposes: Option<BTreeSet<Purpose>>,
    pub recipient_kinds: Option<BTreeSet<RecipientKind>>,
}

impl StandingRule {
    fn matches(&self, reason: OverrideReason, purpose: Purpose, recipient: &Recipient) -> bool {
        self.reasons.as_ref().is_none_or(|reasons| reasons.contains(&reason))
            && self.purposes.as_ref().is_none_or(|purposes| purposes.contains(&purpose))
            && self.recipient_kinds.as_ref().is_none_or(|kinds| kinds.contains(&recipient.kind))
    }
}

/// The DPO's standing rules, in file order; empty means none (every
/// override waits for a DPO's approval).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StandingRules {
    rules: Vec<StandingRule>,
}

/// The rule of `overrides.toml` that let an override take effect at once:
/// its 1-based index in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandingRuleId(pub usize);

impl fmt::Display for StandingRuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{OVERRIDES_FILE}#{}", self.0)
    }
}

impl StandingRules {
    /// The first rule under which an override for `reason` takes effect at
    /// once, for a referral of `priority` and `purpose` to `recipient`; none
    /// unless the priority is `emergency`.
    pub fn standing_rule(&self, priority: Priority, reason: OverrideReason, purpose: Purpose, recipient: &Recipient) -> Option<StandingRuleId> {
        if priority != Priority::Emergency {
            return None;
        }
        self.rules.iter().position(|rule| rule.matches(reason, purpose, recipient)).map(|index| StandingRuleId(index + 1))
    }

    pub fn rules(&self) -> &[StandingRule] {
        &self.rules
    }

    /// The rules of one file (`file` names it in problems). Every problem is
    /// located by line and column; messages never repeat a value from the text.
    pub fn parse(file: &str, text: &str) -> Result<Self, Vec<PolicyProblem>> {
        let locate = |span: Option<Range<usize>>, problem: String| PolicyProblem::at(file, text, span.map(|s| s.start), problem);
        let raw: RawFile = toml::from_str(text).map_err(|error| vec![locate(error.span(), sanitised(error.message()))])?;
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for raw_rule in raw.standing {
            let reasons = list(&raw_rule.reasons, "reasons", &mut problems, &locate, |text| {
                text.parse::<OverrideReason>().map_err(|_| format!("reasons must hold only {}", names(OverrideReason::ALL)))
            });
            let purposes = list(&raw_rule.purposes, "purposes", &mut problems, &locate, |text| {
                text.parse::<Purpose>().map_err(|_| format!("purposes must hold only {}", names(Purpose::ALL)))
            });
            let recipient_kinds = list(&raw_rule.recipient_kinds, "recipient_kinds", &mut problems, &locate, |text| {
                text.parse::<RecipientKind>().map_err(|_| format!("recipient_kinds must hold only {}", names(RecipientKind::ALL)))
            });
            if let (Ok(reasons), Ok(purposes), Ok(recipient_kinds)) = (reasons, purposes, recipient_kinds) {
                rules.push(StandingRule { reasons, purposes, recipient_kinds });
            }
        }
        if problems.is_empty() { Ok(Self { rules }) } else { Err(problems) }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    standing: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    reasons: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    purposes: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    recipient_kinds: Option<Spanned<Vec<Spanned<String>>>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CountryCode, OrgId};

    const SHIPPED: &str = include_str!("../../config/policies/overrides.toml");

    fn recipient(kind: RecipientKind) -> Recipient {
        Recipient::new(OrgId::parse("some-org").unwrap(), CountryCode::parse("NGA").unwrap(), kind, false, BTreeSet::new())
    }

    fn parse(text: &str) -> StandingRules {
        StandingRules::parse(OVERRIDES_FILE, text).unwrap()
    }

    #[test]
    fn only_an_emergency_meets_a_standing_rule_and_the_first_match_is_named() {
        let rules = parse(
            r#"
            [[standing]]
            reasons = ["child_at_imminent_risk"]
            recipient_kinds = ["child_protection"]

            [[standing]]
            reasons = ["life_threatening"]
            purposes = ["return", "reintegration"]
            recipient_kinds = ["health_provider", "iom"]
            "#,
        );
        let health = recipient(RecipientKind::HealthProvider);
        let life = OverrideReason::LifeThreatening;
        assert_eq!(rules.standing_rule(Priority::Emergency, life, Purpose::Return, &health), Some(StandingRuleId(2)));
        assert_eq!(StandingRuleId(2).to_string(), "overrides.toml#2");
        for priority in [Priority::Urgent, Priority::Normal] {
            assert_eq!(rules.standing_rule(priority, life, Purpose::Return, &health), None, "{priority}");
        }
        // Each list must hold the referral's value.
        assert_eq!(rules.standing_rule(Priority::Emergency, life, Purpose::FamilyTracing, &health), None);
        assert_eq!(rules.standing_rule(Priority::Emergency, life, Purpose::Return, &recipient(RecipientKind::Ngo)), None);
        let child = OverrideReason::ChildAtImminentRisk;
        assert_eq!(rules.standing_rule(Priority::Emergency, child, Purpose::Return, &health), None);
        assert_eq!(
            rules.standing_rule(Priority::Emergency, child, Purpose::FamilyTracing, &recipient(RecipientKind::ChildProtection)),
            Some(StandingRuleId(1))
        );
        // A rule without lists matches every emergency override; none, nothing.
        let any = parse("[[standing]]\n");
        assert_eq!(any.standing_rule(Priority::Emergency, child, Purpose::Return, &recipient(RecipientKind::Ngo)), Some(StandingRuleId(1)));
        assert_eq!(any.standing_rule(Priority::Urgent, child, Purpose::Return, &recipient(RecipientKind::Ngo)), None);
        assert_eq!(parse("# none\n"), StandingRules::default());
    }

    #[test]
    fn the_shipped_file_has_no_rule_and_its_example_parses() {
        // Shipped without a rule: every override waits for a second person
        // until a DPO decides otherwise, and signs that off.
        assert_eq!(parse(SHIPPED), StandingRules::default());
        let example: String = SHIPPED
            .lines()
            .filter_map(|line| line.strip_prefix("# ").filter(|l| l.starts_with("[[standing]]") || l.contains(" = [")))
            .map(|line| format!("{line}\n"))
            .collect();
        let rules = parse(&example);
        assert_eq!(rules.rules().len(), 1, "the example in the shipped file's comments: {example}");
        let health = recipient(RecipientKind::HealthProvider);
        assert!(rules.standing_rule(Priority::Emergency, OverrideReason::LifeThreatening, Purpose::Return, &health).is_some());
    }

    #[test]
    fn problems_are_located_and_name_no_value_from_the_file() {
        let text = "[[standing]]\nreasons = [\"Amina Yusuf\"]\npurposes = []\n\n[[standing]]\nrecipient_kinds = [\"ngo\", \"Lagos\"]\nwho = 1\n";
        let problems = StandingRules::parse(OVERRIDES_FILE, text).unwrap_err();
        // The unknown key stops the reading before any value is looked at.
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!((problems[0].line, problems[0].column), (7, 1), "{problems:?}");
        let text = "[[standing]]\nreasons = [\"Amina Yusuf\"]\npurposes = []\n\n[[standing]]\nrecipient_kinds = [\"ngo\", \"Lagos\"]\n";
        let problems = StandingRules::parse(OVERRIDES_FILE, text).unwrap_err();
        let located: Vec<(usize, usize)> = problems.iter().map(|p| (p.line, p.column)).collect();
        assert_eq!(located, [(2, 12), (3, 12), (6, 27)], "{problems:?}");
        for problem in &problems {
            assert_eq!(problem.file, OVERRIDES_FILE);
            assert!(!problem.problem.contains("Amina") && !problem.problem.contains("Lagos"), "{problem:?}");
        }
    }
}
