//! RFC 9457 problem details: the one place where causes become status codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value};

use crate::app::sending::referrals::Denied;
use crate::app::AppError;
use crate::domain::policy::PolicyProblem;
use crate::domain::submission::FieldProblem;
use crate::wire::{problem_type, FailureCode};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// The problem a denied referral is answered with: the problem members
/// and what the decision said.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReferralDenied {
    /// `https://referral-gateway.example/problems/referral-denied`
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    /// 422
    pub status: u16,
    pub detail: String,
    #[serde(flatten)]
    pub denied: Denied,
}

/// An error response of the API.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    body: Value,
    /// Seconds after which a retry may succeed (`Retry-After`).
    retry_after: Option<u32>,
}

/// When a client refused for lack of a body-reading slot may try again.
const BUSY_RETRY_AFTER_SECONDS: u32 = 5;

impl Problem {
    pub fn new(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Self {
        let body = json!({
            "type": problem_type(code),
            "title": title,
            "status": status.as_u16(),
            "detail": detail.into(),
        });
        Self { status, body, retry_after: None }
    }

    /// The problem's title, for a page that shows it to a person.
    pub fn title(&self) -> &str {
        self.body.get("title").and_then(Value::as_str).unwrap_or_default()
    }

    pub fn detail(&self) -> &str {
        self.body.get("detail").and_then(Value::as_str).unwrap_or_default()
    }

    /// Says when to try again (`Retry-After`, in seconds).
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        if let Some(object) = self.body.as_object_mut() {
            object.insert(key.to_owned(), value);
        }
        self
    }

    /// `422 referral-denied`: the decision denied the referral (first
    /// answer or replay alike, rendered from the recorded decision).
    pub fn referral_denied(denied: Denied) -> Self {
        let problem = ReferralDenied {
            problem_type: problem_type("referral-denied"),
            title: "The referral may not be sent".to_owned(),
            status: StatusCode::UNPROCESSABLE_ENTITY.as_u16(),
            detail: "The decision denied the referral; reason_codes says why. Nothing will be sent.".to_owned(),
            denied,
        };
        match serde_json::to_value(problem) {
            Ok(body) => Self { status: StatusCode::UNPROCESSABLE_ENTITY, body, retry_after: None },
            Err(_) => internal(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn not_found() -> Self {
        Problem::new(StatusCode::NOT_FOUND, FailureCode::NotFound.as_str(), "Not found", "There is no such resource for this caller.")
    }

    pub fn method_not_allowed() -> Self {
        Problem::new(StatusCode::METHOD_NOT_ALLOWED, FailureCode::MethodNotAllowed.as_str(), "Method not allowed", "This resource does not support the method.")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Request body too large", format!("The body must not exceed {limit} bytes."))
    }

    /// A body that ended before its declared length, or whose chunked
    /// framing is broken: not a size problem, so not `413`.
    pub fn malformed_body() -> Self {
        Problem::new(StatusCode::BAD_REQUEST, FailureCode::MalformedBody.as_str(), "Malformed body", "The request body could not be read: its framing is broken or it ended early.")
    }

    /// A problem for why a guarded body could not be read (`408` or `503`).
    pub fn body_read(error: &super::body_guard::BodyReadError) -> Self {
        use super::body_guard::BodyReadError;
        match error {
            BodyReadError::TimedOut(limit) => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                FailureCode::RequestTimeout.as_str(),
                "Request timeout",
                format!("The request body must arrive within {} seconds of the request head.", limit.as_secs()),
            ),
            BodyReadError::Busy => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Too many bodies in progress",
                "The gateway is reading as many request bodies as it allows; try again shortly.",
            )
            .retry_after(BUSY_RETRY_AFTER_SECONDS),
        }
    }

    /// A request over the gateway's bounds on header fields
    /// (`head_limits`): `431`, not the bare answer hyper would give.
    pub fn headers_too_large(max_fields: usize, max_bytes: usize) -> Self {
        Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request header fields too large",
            format!("A request may carry at most {max_fields} header fields, of at most {max_bytes} bytes in all."),
        )
    }

    pub fn unsupported_media_type() -> Self {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FailureCode::UnsupportedMediaType.as_str(),
            "Unsupported media type",
            "Send the body as application/json.",
        )
    }

    pub fn invalid(problems: &[FieldProblem]) -> Self {
        let listed: Vec<Value> = problems.iter().map(|p| json!({ "field": p.field, "problem": p.problem })).collect();
        Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "The request is invalid", "See `problems`: each names a field and the rule it breaks.")
            .with("problems", Value::Array(listed))
    }

    pub fn invalid_query(problem: &str) -> Self {
        Self::invalid(&[FieldProblem { field: "(query)".to_owned(), problem: problem.to_owned() }])
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme it wants. Client certificates
            // have no scheme; they are negotiated in the TLS handshake.
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"referral-gateway\""));
        }
        response
    }
}

/// Seconds a client waits before it retries what failed on an unreachable database.
const UNAVAILABLE_RETRY_AFTER_SECONDS: u32 = 5;

fn policy_problems(problems: &[PolicyProblem]) -> Value {
    Value::Array(
        problems
            .iter()
            .map(|p| json!({ "file": p.file, "line": p.line, "column": p.column, "problem": p.problem }))
            .collect(),
    )
}

impl From<AppError> for Problem {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Unauthenticated(cause) => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Authentication required", cause.to_string())
                    .with("code", json!(cause.code()))
            }
            AppError::Forbidden { code } => {
                let detail = match code {
                    "org_not_served_here" => "The caller's organisation is not one this gateway serves.",
                    "cross_site_request" => "A browser sent this request for another site's page: the API answers none.",
                    _ => "The caller's roles do not allow this.",
                };
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail).with("code", json!(code))
            }
            AppError::NotFound => Problem::not_found(),
            AppError::MalformedJson { line, column } => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                format!("The body is not valid JSON (line {line}, column {column})."),
            ),
            AppError::Invalid(problems) => Problem::invalid(&problems),
            AppError::IdempotencyConflict { referral_id } => Problem::new(
                StatusCode::CONFLICT,
                "idempotency-conflict",
                "Idempotency key already used",
                "This idempotency key was used for a different request body; use a new key for a new referral.",
            )
            .with("referral_id", json!(referral_id)),
            AppError::PolicyInvalid(problems) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "policy-invalid",
                "The policy set is invalid",
                "Nothing was stored; the active policy is unchanged. See `problems`.",
            )
            .with("problems", policy_problems(&problems)),
            AppError::PolicyRefused(refusal) => policy_refused(refusal),
            AppError::ReviewRefused(refusal) => Problem::new(
                StatusCode::CONFLICT,
                "policy-review-refused",
                "The review is refused",
                format!("{refusal}. Nothing was recorded."),
            )
            .with("code", json!(refusal.code())),
            AppError::OverrideDecisionRefused(refusal) => Problem::new(
                StatusCode::CONFLICT,
                "override-decision-refused",
                "The decision on the override is refused",
                format!("{refusal}. Nothing was recorded."),
            )
            .with("code", json!(refusal.code())),
            AppError::Contended => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Busy",
                "Others changed what this request depends on while it ran; nothing was recorded. Try again.",
            )
            .retry_after(BUSY_RETRY_AFTER_SECONDS),
            AppError::PacketRefused(cause) => {
                let status = match cause {
                    crate::crypto::packet::OpenError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    crate::crypto::packet::OpenError::Replayed => StatusCode::CONFLICT,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                Problem::new(status, crate::wire::FailureCode::from(&cause).as_str(), "Packet refused", cause.to_string())
            }
            AppError::Erased => Problem::new(StatusCode::GONE, "erased", "Erased", "This case was erased; nothing of it can be read any more."),
            AppError::OnwardRefused(refusal) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "onward-refused",
                "The case may not be passed on",
                format!("{refusal}. Nothing was passed on."),
            )
            .with("reason_code", json!(refusal.code())),
            AppError::ReplyNotPossible(refusal) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reply-not-possible",
                "The case cannot be answered with a reply",
                format!("{}. Nothing was sent.", reply_not_possible(refusal)),
            )
            .with("reason_code", json!(refusal.as_str())),
            AppError::MatchRefused(refusal) => {
                use crate::app::matching::MatchRefusal as R;
                let (status, title) = match refusal {
                    R::Malformed => (StatusCode::BAD_REQUEST, "Malformed match query"),
                    R::AskerNotServed => (StatusCode::FORBIDDEN, "Asking organisation not served by the asking gateway"),
                    R::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "Match queries limited"),
                    R::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Matching unavailable"),
                    R::NotASearch => (StatusCode::UNPROCESSABLE_ENTITY, "Not a search that can be matched"),
                    R::NotAMember => (StatusCode::UNPROCESSABLE_ENTITY, "Not another active member gateway"),
                };
                let problem = Problem::new(status, refusal.code(), title, format!("{refusal}. Nothing was matched."));
                if refusal == R::RateLimited { problem.retry_after(3600) } else { problem }
            }
            AppError::NotErased => Problem::new(
                StatusCode::CONFLICT,
                "not-erased",
                "Not erased",
                "The sender has not withdrawn this case; there is no erasure to confirm.",
            ),
            AppError::Undeliverable { bound, limit } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "referral-too-large-to-deliver",
                "Referral too large to deliver",
                format!(
                    "Sealed for its destination, this case could take {bound} bytes; the destination's gateway takes packets of at most {limit} bytes. Nothing was recorded: send less (fewer documents or shorter notes)."
                ),
            )
            .with("packet_bound_bytes", json!(bound))
            .with("destination_limit_bytes", json!(limit)),
            AppError::NotFederated => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-federated", "Not federated", "This gateway has no signing key in the federation directory: it takes no packets and signs nothing.")
            }
            AppError::PeriodOpen(period) => Problem::new(
                StatusCode::CONFLICT,
                "statistics-period-open",
                "Period not closed",
                format!("Statistics of {period} are released an hour after it ends, once all of its events are recorded. Ask for a month or quarter that has ended."),
            )
            .with("period", json!(period.to_string())),
            AppError::Store(crate::store::StoreError::Unavailable(cause)) => {
                tracing::error!(error = %cause, "database unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "The database cannot be reached. Try again later; a submission may be retried with the same idempotency key.",
                )
                .retry_after(UNAVAILABLE_RETRY_AFTER_SECONDS)
            }
            AppError::Store(cause) => {
                tracing::error!(error = %cause, "storage failure");
                internal()
            }
            AppError::Internal(cause) => {
                tracing::error!(error = %cause, "internal failure");
                internal()
            }
        }
    }
}

/// An upload that compiled but failed its tests or proofs: what failed, in
/// test names, differences and plain-words counterexamples.
fn policy_refused(refusal: crate::app::dpo::policy_checks::UploadRefusal) -> Problem {
    use crate::app::dpo::policy_checks::UploadRefusal;
    const UNCHANGED: &str = "Nothing was stored; the policy in force is unchanged.";
    match refusal {
        UploadRefusal::TestsInvalid(problem) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy-tests-invalid",
            "The policy tests cannot run",
            format!("{UNCHANGED} A test file is invalid: {problem}"),
        ),
        UploadRefusal::TestsFailed(failed) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy-tests-failed",
            "The policy tests fail",
            format!("{UNCHANGED} See `failed`: each names a test and what the decision did differently."),
        )
        .with("failed", Value::Array(failed.into_iter().map(|(test, differences)| json!({ "test": test, "differences": differences })).collect())),
        UploadRefusal::ProofRefuted(refuted) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy-proof-refuted",
            "A property of the policy set is refuted",
            format!("{UNCHANGED} See `refuted`: each names the property and a request that breaks it."),
        )
        .with(
            "refuted",
            Value::Array(
                refuted.into_iter().map(|(property, counterexamples)| json!({ "property": property, "counterexamples": counterexamples })).collect(),
            ),
        ),
    }
}

fn internal() -> Problem {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", "The request failed. A submission may be retried with the same idempotency key.")
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

/// What a `reply-not-possible` problem says, by its code.
fn reply_not_possible(refusal: crate::domain::reply_cases::ReplyNotPossible) -> &'static str {
    use crate::domain::reply_cases::ReplyNotPossible as R;
    match refusal {
        R::NotARequest => "Only a family_tracing or family_assessment_request case is answered with a reply",
        R::PurposeMismatch => "tracing_reply answers family_tracing, family_assessment answers family_assessment_request",
        R::SealedEndToEnd => "The case is sealed end to end to your organisation: name the organisation that asked (the envelope's requested_by) in `to`",
        R::OnwardCopy => "The case was passed on to your organisation: only the organisation it was sent to answers it",
        R::RequesterUnknown => "The case does not name the organisation that asked, or that organisation left the directory",
        R::NotTheRequester => "The organisation named in `to` is not the one that asked, or is not listed behind the gateway the case came from",
    }
}
