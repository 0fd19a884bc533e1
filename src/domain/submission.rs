//! A referral as a national system submits it, and its parsing.
//!
//! Errors name the field (a JSON path) and the rule broken, and never repeat
//! the submitted value: it may be a name, a date of birth or a note.

use std::sync::OnceLock;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::ValidationError;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::case::Case;
use super::duplicate_keys::first_repeated_key;
use super::emergency_override::OverrideRequest;
use super::consent::Consent;
use super::decision::Decision;
use super::minimise::Payload;
use super::policy::DataProtectionPolicy;
use super::priority::Priority;
use super::recipient::Recipient;
use super::{CountryCode, IdempotencyKey, OrgId, Purpose, SubjectRef};

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
    /// A returnee's case whose management passes to the recipient once it
    /// accepts: the sender's timeline then marks the `handover`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handover: bool,
    /// How soon the recipient must answer, as on the inter-agency referral
    /// form: `emergency` (within 24 hours), `urgent` (72 hours) or `normal`
    /// (two weeks, the default). Deadlines for delivery, acknowledgement and
    /// the first answer follow from it (`overdue` in the referral).
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// Share without the person's consent because a life is at risk, as the
    /// field guidance allows: it stands in for missing consent only, takes
    /// effect once a DPO other than the submitter approves it within the
    /// window, and never reaches `case_notes`, `asylum` or a state actor of
    /// an origin state. Asked for only when consent is missing; a referral
    /// allowed without it goes as usual.
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub emergency_override: Option<OverrideRequest>,
}

/// Why a submission was refused: where, and which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmissionError {
    #[error("malformed JSON at line {line}, column {column}")]
    Syntax { line: usize, column: usize },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldProblem>),
    /// The compiled-in schema did not compile: a defect of the build.
    #[error("the referral schema is unavailable")]
    SchemaUnavailable,
}

/// At most this many problems are reported for one submission.
const MAX_PROBLEMS: usize = 20;

/// JSON Schema (2020-12) of a submission, generated from the types.
pub fn json_schema() -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<ReferralSubmission>();
    schema.insert("$id".to_owned(), Value::String("https://referral-gateway.example/schemas/referral.schema.json".to_owned()));
    schema.to_value()
}

fn validator() -> Result<&'static jsonschema::Validator, SubmissionError> {
    static VALIDATOR: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| jsonschema::draft202012::new(&json_schema()).ok())
        .as_ref()
        .ok_or(SubmissionError::SchemaUnavailable)
}

/// `/case/identity/nationalities/0` -> `case.identity.nationalities[0]`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    if out.is_empty() { "(body)".to_owned() } else { out }
}

fn child(path: &str, name: &str) -> String {
    match (path, looks_like_field_name(name)) {
        (_, false) => path.to_owned(),
        ("(body)", true) => name.to_owned(),
        (_, true) => format!("{path}.{name}"),
    }
}

/// Problems for one schema error, worded from the rule broken, never from the value.
fn schema_problems(error: &ValidationError<'_>, out: &mut Vec<FieldProblem>) {
    let path = dotted(&error.instance_path().to_string());
    let here = |text: String| problem(path.clone(), text);
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            out.extend(unexpected.iter().map(|name| problem(child(&path, name), "unknown field")));
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or("");
            out.push(problem(child(&path, name), "is required"));
        }
        ValidationErrorKind::Type { kind: TypeKind::Single(expected) } => out.push(here(format!("must be of type {expected}"))),
        ValidationErrorKind::Enum { options } => {
            let listed = options.as_array().filter(|o| o.len() <= 20).map(|o| {
                o.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
            });
            out.push(here(match listed {
                Some(list) => format!("is not one of the allowed values: {list}"),
                None => "is not one of the allowed values".to_owned(),
            }));
        }
        ValidationErrorKind::Constant { expected_value } => out.push(here(format!("must be {expected_value}"))),
        ValidationErrorKind::Pattern { .. } => out.push(here("does not have the required form".to_owned())),
        ValidationErrorKind::MinLength { limit } => out.push(here(format!("must be at least {limit} characters"))),
        ValidationErrorKind::MaxLength { limit } => out.push(here(format!("must be at most {limit} characters"))),
        ValidationErrorKind::MinItems { limit } => out.push(here(format!("must have at least {limit} entries"))),
        ValidationErrorKind::MaxItems { limit } => out.push(here(format!("must have at most {limit} entries"))),
        ValidationErrorKind::Minimum { limit } => out.push(here(format!("must be at least {limit}"))),
        ValidationErrorKind::Maximum { limit } => out.push(here(format!("must be at most {limit}"))),
        ValidationErrorKind::MinProperties { limit } => out.push(here(format!("must give at least {limit} of its fields"))),
        ValidationErrorKind::UniqueItems => out.push(here("must not contain duplicates".to_owned())),
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            // Report the branch the value was evidently meant for. Not meant: a
            // branch whose tag (`type`, `status`: the schema's only consts)
            // did not match, or one that fails only on type at this very path
            // (e.g. the `null` of an optional field).
            let this_path = error.instance_path().to_string();
            let meant: Vec<&Vec<ValidationError<'static>>> = context
                .iter()
                .filter(|branch| {
                    let tag_mismatch = branch.iter().any(|e| matches!(e.kind(), ValidationErrorKind::Constant { .. }));
                    let wrong_type_here = branch.iter().all(|e| {
                        matches!(e.kind(), ValidationErrorKind::Type { .. } | ValidationErrorKind::Enum { .. })
                            && e.instance_path().to_string() == this_path
                    });
                    !tag_mismatch && !wrong_type_here
                })
                .collect();
            match meant.as_slice() {
                [branch] => branch.iter().for_each(|e| schema_problems(e, out)),
                _ => out.push(here("does not match any of the allowed forms".to_owned())),
            }
        }
        _ => out.push(here(format!("breaks the schema rule `{}`", error.kind().keyword()))),
    }
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
            SubmissionError::Syntax { .. } | SubmissionError::SchemaUnavailable => &[],
            SubmissionError::Invalid(problems) => problems,
        }
    }
}

pub(crate) fn looks_like_field_name(text: &str) -> bool {
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
    /// Decides this submission for `recipient` (none: not in the directory)
    /// and cuts its case to what may go, as the sending gateway does on submit.
    pub fn decide_and_minimise(
        &self,
        sender_country: CountryCode,
        recipient: Option<&Recipient>,
        policy: &DataProtectionPolicy,
        now: DateTime<Utc>,
    ) -> (Decision, Payload) {
        super::decide::decide_and_minimise(&self.case, &self.consent, sender_country, recipient, self.purpose, policy, now)
    }

    /// Parses and checks a submission received at `now`: JSON syntax, then the
    /// published schema (so that whatever the schema refuses is refused here,
    /// whatever serde's own leniency), then the types, then the clock. (A
    /// reply purpose parses, for simulations and policy tests; the API
    /// takes a reply only as the answer to a request, [`ReplySubmission`].)
    pub fn parse(json: &str, now: DateTime<Utc>) -> Result<Self, SubmissionError> {
        let submission: Self = parse_checked(json, validator()?)?;
        let problems = clock_problems(&submission.case, &submission.consent, now);
        if problems.is_empty() { Ok(submission) } else { Err(SubmissionError::Invalid(problems)) }
    }

    /// Checks that need the time of receipt: nothing recorded as past may lie in the future.
    pub fn clock_problems(&self, now: DateTime<Utc>) -> Vec<FieldProblem> {
        clock_problems(&self.case, &self.consent, now)
    }
}

/// JSON syntax, repeated keys, the schema `validator` checks, then the types.
fn parse_checked<T: serde::de::DeserializeOwned>(json: &str, validator: &jsonschema::Validator) -> Result<T, SubmissionError> {
    let value: Value = serde_json::from_str(json).map_err(|e| SubmissionError::Syntax { line: e.line(), column: e.column() })?;
    if let Some(field) = first_repeated_key(json) {
        return Err(SubmissionError::Invalid(vec![problem(field, "is given more than once")]));
    }
    let mut problems = Vec::new();
    for error in validator.iter_errors(&value) {
        schema_problems(&error, &mut problems);
        if problems.len() >= MAX_PROBLEMS {
            break;
        }
    }
    if !problems.is_empty() {
        problems.dedup();
        problems.truncate(MAX_PROBLEMS);
        return Err(SubmissionError::Invalid(problems));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { "(body)".to_owned() } else { path };
        SubmissionError::Invalid(vec![problem(field, sanitised(&error.inner().to_string()))])
    })
}

/// Checks of a case and its consent that need the time of receipt: nothing
/// recorded as past may lie in the future.
fn clock_problems(case: &Case, consent: &Consent, now: DateTime<Utc>) -> Vec<FieldProblem> {
    let today = now.date_naive();
    let latest = now + ALLOWED_CLOCK_SKEW;
    let mut problems = Vec::new();
    for (field, date) in case.past_dates() {
        if date > today {
            problems.push(problem(field, "must not be in the future"));
        } else if field.ends_with("date_of_birth") && EARLIEST_BIRTH.is_some_and(|earliest| date < earliest) {
            problems.push(problem(field, "must not be before 1900-01-01"));
        }
    }
    if consent.given_at > latest {
        problems.push(problem("consent.given_at", "must not be in the future"));
    }
    if consent.withdrawn_at.is_some_and(|at| at > latest) {
        problems.push(problem("consent.withdrawn_at", "must not be in the future"));
    }
    if consent.withdrawn_at.is_some_and(|at| at < consent.given_at) {
        problems.push(problem("consent.withdrawn_at", "must not be before consent.given_at"));
    }
    for (index, scope) in consent.scopes().iter().enumerate() {
        if scope.valid_until() <= consent.given_at {
            problems.push(problem(format!("consent.scopes[{index}].valid_until"), "must be later than consent.given_at"));
        }
    }
    problems
}

vocabulary! {
    /// What a reply case is: the answer to a tracing request (the traced
    /// person found) or to a family-assessment request (the assessment).
    ReplyPurpose, "reply purpose" {
        TracingReply => "tracing_reply",
        FamilyAssessment => "family_assessment",
    }
}

impl ReplyPurpose {
    pub const fn purpose(self) -> Purpose {
        match self {
            Self::TracingReply => Purpose::TracingReply,
            Self::FamilyAssessment => Purpose::FamilyAssessment,
        }
    }
}

/// A reply case, as the recipient organisation of a tracing or
/// family-assessment request submits it (`POST /v1/inbox/{packet_id}/replies`):
/// a case about the person it is about (the traced relative, the family
/// assessed), under that person's own consent. It goes back to the
/// organisation that asked, decided here like any referral.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Reply case")]
pub struct ReplySubmission {
    /// Resubmitting with the same key and body returns the first answer.
    pub idempotency_key: IdempotencyKey,
    /// `tracing_reply` answers a `family_tracing` request,
    /// `family_assessment` a `family_assessment_request`.
    pub purpose: ReplyPurpose,
    /// The replying organisation's pseudonymous reference for the person
    /// the reply is about; never a name.
    pub subject_ref: SubjectRef,
    pub case: Case,
    /// The consent of the person the reply is about, for the organisation
    /// that asked: a traced relative may refuse to be located.
    pub consent: Consent,
    /// As for a referral; `normal` if absent.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// For a request sealed end to end to the replying organisation (its
    /// gateway cannot read it): the organisation that asked, as the
    /// request's envelope names it (`requested_by`). The requesting gateway
    /// refuses a reply to any other. For a readable request, absent or the
    /// same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<OrgId>,
}

/// JSON Schema (2020-12) of a reply case, generated from the types.
pub fn reply_json_schema() -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    generator.into_root_schema_for::<ReplySubmission>().to_value()
}

impl ReplySubmission {
    /// Parses and checks a reply received at `now`, as [`ReferralSubmission::parse`].
    pub fn parse(json: &str, now: DateTime<Utc>) -> Result<Self, SubmissionError> {
        static VALIDATOR: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
        let validator = VALIDATOR
            .get_or_init(|| jsonschema::draft202012::new(&reply_json_schema()).ok())
            .as_ref()
            .ok_or(SubmissionError::SchemaUnavailable)?;
        let reply: Self = parse_checked(json, validator)?;
        let problems = clock_problems(&reply.case, &reply.consent, now);
        if problems.is_empty() { Ok(reply) } else { Err(SubmissionError::Invalid(problems)) }
    }

    /// The referral this reply is sent as: to the organisation that asked.
    pub fn into_referral(self, requested_by: OrgId) -> ReferralSubmission {
        ReferralSubmission {
            idempotency_key: self.idempotency_key,
            purpose: self.purpose.purpose(),
            destination: requested_by,
            subject_ref: self.subject_ref,
            case: self.case,
            consent: self.consent,
            handover: false,
            priority: self.priority,
            emergency_override: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_become_dotted_paths() {
        assert_eq!(dotted(""), "(body)");
        assert_eq!(dotted("/case/identity/nationalities/0"), "case.identity.nationalities[0]");
        assert_eq!(dotted("/consent/scopes/1/valid_until"), "consent.scopes[1].valid_until");
        assert_eq!(child("case.identity", "nickname"), "case.identity.nickname");
        assert_eq!(child("case.identity", "Amina Diallo"), "case.identity");
        assert_eq!(child("(body)", "extra"), "extra");
    }

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
