//! A referral as a national system submits it, and its parsing.
//!
//! Errors name the field (a JSON path) and the rule broken, and never repeat
//! the submitted value: it may be a name, a date of birth or a note.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::case::Case;
use super::consent::Consent;
use super::{IdempotencyKey, OrgId, Purpose, SubjectRef};

/// How far a national system's clock may run ahead of the gateway's.
pub const ALLOWED_CLOCK_SKEW: Duration = Duration::minutes(5);

/// Dates of birth before this are typing errors, not people.
const EARLIEST_BIRTH: Option<NaiveDate> = NaiveDate::from_ymd_opt(1900, 1, 1);

/// A referral submission: one purpose, one destination organisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Referral submission")]
pub struct ReferralSubmission {
    /// Resubmitting with the same key and body returns the first answer.
    pub idempotency_key: IdempotencyKey,
    pub purpose: Purpose,
    /// The recipient organisation's id in the federation directory.
    pub destination: OrgId,
    /// The sender's pseudonymous reference for the person; never a name.
    pub subject_ref: SubjectRef,
    pub case: Case,
    pub consent: Consent,
}

/// Why a submission was refused: where, and which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmissionError {
    #[error("malformed JSON at line {line}, column {column}")]
    Syntax { line: usize, column: usize },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldProblem>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldProblem {
    /// JSON path of the field, e.g. `case.identity.nationalities[0]`.
    pub field: String,
    pub problem: String,
}

impl SubmissionError {
    pub fn problems(&self) -> &[FieldProblem] {
        match self {
            SubmissionError::Syntax { .. } => &[],
            SubmissionError::Invalid(problems) => problems,
        }
    }
}

fn looks_like_field_name(text: &str) -> bool {
    (1..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// serde's messages quote the offending value ("invalid type: string \"Amina\"…",
/// "unknown variant `x`…"). Keep only what the schema says was expected.
fn sanitised(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or("");
        let expected = rest.find("expected").and_then(|i| rest.get(i..)).unwrap_or("");
        return if looks_like_field_name(name) {
            format!("unknown field `{name}`; {expected}").trim_end_matches("; ").to_owned()
        } else {
            format!("unknown field; {expected}").trim_end_matches("; ").to_owned()
        };
    }
    if message.starts_with("missing field") || message.starts_with("duplicate field") || message.starts_with("invalid ") && message.contains(": must") {
        return message.to_owned();
    }
    match message.find("expected") {
        Some(index) => format!("invalid value; {}", message.get(index..).unwrap_or("")),
        None if message.contains('"') || message.contains('`') => "invalid value".to_owned(),
        None => message.to_owned(),
    }
}

fn problem(field: impl Into<String>, problem: impl Into<String>) -> FieldProblem {
    FieldProblem { field: field.into(), problem: problem.into() }
}

impl ReferralSubmission {
    /// Parses and checks a submission received at `now`.
    pub fn parse(json: &str, now: DateTime<Utc>) -> Result<Self, SubmissionError> {
        let deserializer = &mut serde_json::Deserializer::from_str(json);
        let submission: Self = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let inner = error.inner();
            if inner.is_syntax() || inner.is_eof() {
                return SubmissionError::Syntax { line: inner.line(), column: inner.column() };
            }
            let path = error.path().to_string();
            let field = if path == "." { "(body)".to_owned() } else { path };
            SubmissionError::Invalid(vec![problem(field, sanitised(&inner.to_string()))])
        })?;
        let problems = submission.clock_problems(now);
        if problems.is_empty() { Ok(submission) } else { Err(SubmissionError::Invalid(problems)) }
    }

    /// Checks that need the time of receipt: nothing recorded as past may lie in the future.
    pub fn clock_problems(&self, now: DateTime<Utc>) -> Vec<FieldProblem> {
        let today = now.date_naive();
        let latest = now + ALLOWED_CLOCK_SKEW;
        let mut problems = Vec::new();
        for (field, date) in self.case.past_dates() {
            if date > today {
                problems.push(problem(field, "must not be in the future"));
            } else if field.ends_with("date_of_birth") && EARLIEST_BIRTH.is_some_and(|earliest| date < earliest) {
                problems.push(problem(field, "must not be before 1900-01-01"));
            }
        }
        if self.consent.given_at > latest {
            problems.push(problem("consent.given_at", "must not be in the future"));
        }
        if self.consent.withdrawn_at.is_some_and(|at| at > latest) {
            problems.push(problem("consent.withdrawn_at", "must not be in the future"));
        }
        if self.consent.withdrawn_at.is_some_and(|at| at < self.consent.given_at) {
            problems.push(problem("consent.withdrawn_at", "must not be before consent.given_at"));
        }
        for (index, scope) in self.consent.scopes().iter().enumerate() {
            if scope.valid_until() <= self.consent.given_at {
                problems.push(problem(format!("consent.scopes[{index}].valid_until"), "must be later than consent.given_at"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitising_drops_quoted_values() {
        let cases = [
            ("invalid type: string \"Amina Diallo\", expected u8 at line 3 column 9", "invalid value; expected u8"),
            ("unknown variant `Amina`, expected one of `return`, `reintegration`", "invalid value; expected one of `return`, `reintegration`"),
            ("unknown field `nickname`, expected one of `given_names`", "unknown field `nickname`; expected one of `given_names`"),
            ("unknown field `Amina Diallo`, expected one of `given_names`", "unknown field; expected one of `given_names`"),
            ("missing field `purpose`", "missing field `purpose`"),
            ("invalid subject reference: must be an opaque reference", "invalid subject reference: must be an opaque reference"),
            ("something quoted \"Amina\"", "invalid value"),
        ];
        for (input, expected) in cases {
            assert_eq!(sanitised(input), expected, "{input}");
        }
    }
}
