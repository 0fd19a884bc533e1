//! Retention deadlines: how long a gateway may keep a case, from the DPO's
//! rules (`retention.toml`, stored with the policy set) and the consent's end.
//!
//! A rule matches on an optional purpose and an optional recipient kind; the
//! first matching rule wins. Each gives `max_days`, counted from when the
//! referral was accepted at the sending gateway, and optionally
//! `days_after_closure`, which brings the deadline forward once the
//! recipient reports the case closed. Without a file, or without a matching
//! rule, the built-in fallback applies: [`RetentionPeriod::FALLBACK`],
//! 365 days and no closure rule.
//!
//! Two guarantees hold for every input (property-tested below): a deadline is
//! never after the end of the consent the case was sent under, and a closure
//! never pushes a deadline back.
//!
//! ```toml
//! [[rule]]
//! purpose = "family_tracing"     # optional: return, reintegration, family_tracing
//! recipient_kind = "icrc"        # optional: a recipient kind of the directory
//! max_days = 365                 # 1..=3650, from acceptance at the sending gateway
//! days_after_closure = 30        # optional, 0..=3650
//! ```

use std::ops::Range;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use toml::Spanned;

use super::policy::PolicyProblem;
use super::{Purpose, RecipientKind};

/// The one policy-set file that holds retention rules rather than Cedar.
pub const RETENTION_FILE: &str = "retention.toml";

/// Bounds a DPO may write: ten years at most.
const MAX_DAYS: std::ops::RangeInclusive<u32> = 1..=3650;
const DAYS_AFTER_CLOSURE: std::ops::RangeInclusive<u32> = 0..=3650;

/// How long a case may be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPeriod {
    /// Days from acceptance at the sending gateway.
    pub max_days: u32,
    /// Days after the recipient reports the case closed, if the rule has one.
    pub days_after_closure: Option<u32>,
}

impl RetentionPeriod {
    /// When no file or no rule says otherwise: a year, and closure changes
    /// nothing. Long enough for a return and the first months of
    /// reintegration, short enough that nothing is kept indefinitely.
    pub const FALLBACK: RetentionPeriod = RetentionPeriod { max_days: 365, days_after_closure: None };

    /// The deadline of a case accepted at `accepted` under a consent that
    /// ends at `consent_end`: `accepted + max_days`, or the consent's end if earlier.
    pub fn deadline(self, accepted: DateTime<Utc>, consent_end: Option<DateTime<Utc>>) -> RetentionDeadline {
        let by_rule = accepted.checked_add_signed(Duration::days(i64::from(self.max_days))).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let until = consent_end.map_or(by_rule, |end| end.min(by_rule));
        RetentionDeadline { until, days_after_closure: self.days_after_closure }
    }
}

/// A case's deadline, and the closure rule that may bring it forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionDeadline {
    pub until: DateTime<Utc>,
    pub days_after_closure: Option<u32>,
}

impl RetentionDeadline {
    /// The deadline once the case was closed at `closed_at`: the closure
    /// rule's date if it comes first, never a later one.
    pub fn closed_at(self, closed_at: DateTime<Utc>) -> RetentionDeadline {
        let Some(days) = self.days_after_closure else { return self };
        let by_closure = closed_at.checked_add_signed(Duration::days(i64::from(days))).unwrap_or(DateTime::<Utc>::MAX_UTC);
        RetentionDeadline { until: self.until.min(by_closure), ..self }
    }

    /// The stricter of two deadlines for the same case: the earlier date and
    /// the shorter closure rule. A receiving gateway keeps a case no longer
    /// than the sender's deadline nor its own DPO's rules allow.
    pub fn stricter(self, other: RetentionDeadline) -> RetentionDeadline {
        let days_after_closure = match (self.days_after_closure, other.days_after_closure) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        RetentionDeadline { until: self.until.min(other.until), days_after_closure }
    }

    /// Whether the case must be erased at `now`.
    pub fn has_passed(self, now: DateTime<Utc>) -> bool {
        self.until <= now
    }
}

/// One rule of `retention.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionRule {
    /// `None`: every purpose.
    pub purpose: Option<Purpose>,
    /// `None`: every kind of recipient.
    pub recipient_kind: Option<RecipientKind>,
    pub period: RetentionPeriod,
}

impl RetentionRule {
    fn matches(&self, purpose: Purpose, kind: Option<RecipientKind>) -> bool {
        self.purpose.is_none_or(|p| p == purpose) && self.recipient_kind.is_none_or(|k| Some(k) == kind)
    }

    /// Whether this rule matches every case `later` would: `later` can then never apply.
    fn covers(&self, later: &RetentionRule) -> bool {
        self.purpose.is_none_or(|p| Some(p) == later.purpose) && self.recipient_kind.is_none_or(|k| Some(k) == later.recipient_kind)
    }
}

/// The DPO's retention rules, in file order; empty means the fallback for everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionRules {
    rules: Vec<RetentionRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    purpose: Option<Spanned<String>>,
    #[serde(default)]
    recipient_kind: Option<Spanned<String>>,
    max_days: Spanned<i64>,
    #[serde(default)]
    days_after_closure: Option<Spanned<i64>>,
}

impl RetentionRules {
    /// The rules of one file (`file` names it in problems). Every problem is
    /// located by line and column; messages never repeat a value from the text.
    pub fn parse(file: &str, text: &str) -> Result<Self, Vec<PolicyProblem>> {
        let locate = |span: Option<Range<usize>>, problem: String| PolicyProblem::at(file, text, span.map(|s| s.start), problem);
        let raw: RawFile = toml::from_str(text).map_err(|error| vec![locate(error.span(), sanitised(error.message()))])?;
        let mut problems = Vec::new();
        let mut rules: Vec<RetentionRule> = Vec::new();
        for raw_rule in raw.rule {
            let span = raw_rule.span();
            let raw_rule = raw_rule.into_inner();
            let purpose = match &raw_rule.purpose {
                None => None,
                Some(text) => match text.get_ref().parse::<Purpose>() {
                    Ok(purpose) => Some(purpose),
                    Err(_) => {
                        problems.push(locate(Some(text.span()), format!("purpose must be one of {}", names(Purpose::ALL))));
                        continue;
                    }
                },
            };
            let recipient_kind = match &raw_rule.recipient_kind {
                None => None,
                Some(text) => match text.get_ref().parse::<RecipientKind>() {
                    Ok(kind) => Some(kind),
                    Err(_) => {
                        problems.push(locate(Some(text.span()), format!("recipient_kind must be one of {}", names(RecipientKind::ALL))));
                        continue;
                    }
                },
            };
            let in_range = |value: &Spanned<i64>, range: &std::ops::RangeInclusive<u32>| {
                u32::try_from(*value.get_ref()).ok().filter(|days| range.contains(days))
            };
            let Some(max_days) = in_range(&raw_rule.max_days, &MAX_DAYS) else {
                problems.push(locate(Some(raw_rule.max_days.span()), "max_days must be a whole number of days from 1 to 3650".to_owned()));
                continue;
            };
            let days_after_closure = match &raw_rule.days_after_closure {
                None => None,
                Some(days) => match in_range(days, &DAYS_AFTER_CLOSURE) {
                    Some(days) => Some(days),
                    None => {
                        problems.push(locate(Some(days.span()), "days_after_closure must be a whole number of days from 0 to 3650".to_owned()));
                        continue;
                    }
                },
            };
            let rule = RetentionRule { purpose, recipient_kind, period: RetentionPeriod { max_days, days_after_closure } };
            // First match wins: a rule behind one that covers it would silently never apply.
            if let Some(earlier) = rules.iter().position(|earlier| earlier.covers(&rule)) {
                problems.push(locate(
                    Some(span),
                    format!("this rule never applies: rule {} above matches every case it would (the first matching rule wins)", earlier + 1),
                ));
                continue;
            }
            rules.push(rule);
        }
        if problems.is_empty() { Ok(Self { rules }) } else { Err(problems) }
    }

    /// The period for a case of `purpose` sent to a recipient of `kind`
    /// (`None`: not in the directory): the first matching rule's, else the fallback.
    pub fn period_for(&self, purpose: Purpose, kind: Option<RecipientKind>) -> RetentionPeriod {
        self.rules.iter().find(|rule| rule.matches(purpose, kind)).map_or(RetentionPeriod::FALLBACK, |rule| rule.period)
    }

    pub fn rules(&self) -> &[RetentionRule] {
        &self.rules
    }
}

/// `"a", "b", ...`: the values a field may take, for problems (also used by `sealing`).
pub(super) fn names<T: std::fmt::Display>(values: &[T]) -> String {
    values.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ")
}

/// The TOML reader's message without any value from the text: a quoted or
/// backticked part is kept only when it reads as a key name (`max_days`).
pub(super) fn sanitised(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message.trim();
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest.get(start..=start).unwrap_or("\"");
        out.push_str(rest.get(..start).unwrap_or(""));
        let after = rest.get(start + 1..).unwrap_or("");
        match after.find(quote) {
            Some(end) => {
                let inside = after.get(..end).unwrap_or("");
                let key_like = !inside.is_empty() && inside.len() <= 40 && inside.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                out.push_str(&if key_like { format!("{quote}{inside}{quote}") } else { format!("{quote}…{quote}") });
                rest = after.get(end + 1..).unwrap_or("");
            }
            None => {
                out.push('…');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn at(days: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::days(days)
    }

    const SHIPPED: &str = include_str!("../../config/policies/retention.toml");

    #[test]
    fn the_first_matching_rule_wins_and_the_fallback_covers_the_rest() {
        let rules = RetentionRules::parse(
            "retention.toml",
            r#"
            [[rule]]
            purpose = "family_tracing"
            recipient_kind = "icrc"
            max_days = 90
            days_after_closure = 0

            [[rule]]
            purpose = "family_tracing"
            max_days = 365
            days_after_closure = 30

            [[rule]]
            recipient_kind = "immigration"
            max_days = 60
            "#,
        )
        .unwrap();
        let icrc = rules.period_for(Purpose::FamilyTracing, Some(RecipientKind::Icrc));
        assert_eq!(icrc, RetentionPeriod { max_days: 90, days_after_closure: Some(0) });
        let ngo = rules.period_for(Purpose::FamilyTracing, Some(RecipientKind::Ngo));
        assert_eq!(ngo, RetentionPeriod { max_days: 365, days_after_closure: Some(30) });
        assert_eq!(rules.period_for(Purpose::Return, Some(RecipientKind::Immigration)).max_days, 60);
        assert_eq!(rules.period_for(Purpose::Return, Some(RecipientKind::Iom)), RetentionPeriod::FALLBACK);
        assert_eq!(rules.period_for(Purpose::Return, None), RetentionPeriod::FALLBACK);
        assert_eq!(RetentionRules::default().period_for(Purpose::FamilyTracing, None), RetentionPeriod::FALLBACK);
        assert_eq!(RetentionRules::parse("retention.toml", "# nothing yet\n").unwrap(), RetentionRules::default());
    }

    #[test]
    fn the_shipped_rules_parse_and_give_family_tracing_thirty_days_after_closure() {
        let rules = RetentionRules::parse(RETENTION_FILE, SHIPPED).unwrap();
        let tracing = rules.period_for(Purpose::FamilyTracing, Some(RecipientKind::RedCrossRedCrescent));
        assert_eq!(tracing, RetentionPeriod { max_days: 365, days_after_closure: Some(30) });
        for purpose in Purpose::ALL {
            for kind in RecipientKind::ALL {
                let period = rules.period_for(*purpose, Some(*kind));
                assert!(MAX_DAYS.contains(&period.max_days), "{purpose} {kind}");
            }
        }
    }

    #[test]
    fn a_deadline_is_the_earlier_of_the_rule_and_the_consent_end() {
        let period = RetentionPeriod { max_days: 30, days_after_closure: Some(5) };
        assert_eq!(period.deadline(at(0), None).until, at(30));
        assert_eq!(period.deadline(at(0), Some(at(40))).until, at(30));
        assert_eq!(period.deadline(at(0), Some(at(10))).until, at(10));
        assert_eq!(period.deadline(at(0), None).days_after_closure, Some(5));
    }

    #[test]
    fn a_closure_brings_the_deadline_forward_and_never_back() {
        let deadline = RetentionPeriod { max_days: 30, days_after_closure: Some(5) }.deadline(at(0), None);
        assert_eq!(deadline.closed_at(at(10)).until, at(15));
        assert_eq!(deadline.closed_at(at(28)).until, at(30), "closure near the end extends nothing");
        let no_rule = RetentionPeriod { max_days: 30, days_after_closure: None }.deadline(at(0), None);
        assert_eq!(no_rule.closed_at(at(1)), no_rule);
        assert!(deadline.has_passed(at(30)) && !deadline.has_passed(at(29)));
    }

    #[test]
    fn the_stricter_of_two_deadlines_takes_each_part_at_its_shortest() {
        let sender = RetentionDeadline { until: at(30), days_after_closure: Some(10) };
        let own = RetentionDeadline { until: at(40), days_after_closure: Some(3) };
        assert_eq!(sender.stricter(own), RetentionDeadline { until: at(30), days_after_closure: Some(3) });
        let without = RetentionDeadline { until: at(20), days_after_closure: None };
        assert_eq!(sender.stricter(without), RetentionDeadline { until: at(20), days_after_closure: Some(10) });
    }

    #[test]
    fn problems_are_located_and_name_no_value_from_the_file() {
        let problem = |text: &str| {
            let problems = RetentionRules::parse("retention.toml", text).unwrap_err();
            assert_eq!(problems.len(), 1, "{problems:?}");
            let only = problems.into_iter().next().unwrap();
            assert!(!only.problem.contains("Amina"), "{only}");
            (only.line, only.column, only.problem)
        };
        let (line, column, text) = problem("[[rule]]\npurpose = \"Amina Diallo\"\nmax_days = 30\n");
        assert_eq!((line, column), (2, 11));
        assert!(text.starts_with("purpose must be one of"), "{text}");

        let (line, column, text) = problem("[[rule]]\nmax_days = \"Amina\"\n");
        assert_eq!((line, column), (2, 12));
        assert!(text.contains("expected"), "{text}");

        let (line, _, text) = problem("[[rule]]\nmax_days = 0\n");
        assert_eq!((line, text.as_str()), (2, "max_days must be a whole number of days from 1 to 3650"));
        let (line, _, _) = problem("[[rule]]\nmax_days = 30\ndays_after_closure = 4000\n");
        assert_eq!(line, 3);
        let (_, _, text) = problem("[[rule]]\nmax_days = 30\nkeep_forever = true\n");
        assert!(text.contains("`keep_forever`"), "{text}");
        let (_, _, text) = problem("[[rule]]\npurpose = \"return\"\n");
        assert!(text.contains("`max_days`"), "{text}");
        let (line, _, _) = problem("[[rule]]\nmax_days = 30\n\n[[rule]\nmax_days = \"Amina\n");
        assert_eq!(line, 4);
        let (line, _, text) = problem("[[rule]]\npurpose = \"return\"\nmax_days = 30\n\n[[rule]]\npurpose = \"return\"\nrecipient_kind = \"iom\"\nmax_days = 10\n");
        assert!(line >= 5 && text.contains("never applies"), "{line} {text}");
    }

    #[test]
    fn messages_keep_key_names_and_drop_values() {
        assert_eq!(sanitised("invalid type: string \"Amina Diallo\", expected i64"), "invalid type: string \"…\", expected i64");
        assert_eq!(sanitised("unknown field `keep`, expected one of `purpose`"), "unknown field `keep`, expected one of `purpose`");
        assert_eq!(sanitised("unknown field `Amina D`"), "unknown field `…`");
        assert_eq!(sanitised("invalid string\nexpected `\"`, `'`"), "invalid string; expected `…`, `…`");
    }

    proptest! {
        #[test]
        fn never_after_the_consent_end_and_never_extended_by_closure(
            max_days in 1u32..=3650,
            closure in proptest::option::of(0u32..=3650),
            consent_days in proptest::option::of(-100i64..4000),
            closed_days in -100i64..8000,
            own_days in 1u32..=3650,
        ) {
            let accepted = at(0);
            let consent_end = consent_days.map(at);
            let deadline = RetentionPeriod { max_days, days_after_closure: closure }.deadline(accepted, consent_end);
            if let Some(end) = consent_end {
                prop_assert!(deadline.until <= end);
            }
            prop_assert!(deadline.until <= accepted + Duration::days(i64::from(max_days)));
            let closed = deadline.closed_at(at(closed_days));
            prop_assert!(closed.until <= deadline.until);
            prop_assert!(closed.closed_at(at(closed_days + 1)).until <= closed.until);
            let own = RetentionPeriod { max_days: own_days, days_after_closure: None }.deadline(accepted, None);
            let kept = deadline.stricter(own);
            prop_assert!(kept.until <= deadline.until && kept.until <= own.until);
            if let Some(end) = consent_end {
                prop_assert!(kept.closed_at(at(closed_days)).until <= end);
            }
        }
    }
}
