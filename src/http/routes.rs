//! The handlers: each authorises its caller (before reading anything it
//! sent), reads its input, calls one use case and renders the result.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::DateTime;
use serde_json::{json, Value};

use super::extract::{json_body, json_text, Caller, PathParam};
use super::problem::Problem;
use super::metrics::GaugesNow;
use super::AppState;
use crate::app::dpo::policies::{PolicyList, PolicyReviewed, PolicyUpload, PolicyVersionView, ReviewRequest, Simulation, SimulationAnswer};
use crate::domain::signoff::Verdict;
use crate::app::AppError;
use crate::auth::Principal;
use crate::app::dpo::overrides::{OverrideDecided, OverrideList};
use crate::app::dpo::queries::{AuditPage, AuditQuery, Disclosures};
use crate::app::dpo::subject_report::SubjectReport;
use crate::app::reason_strings;
use crate::app::recipient::onward::OnwardReferralRequest;
use crate::app::recipient::cases::{parse_cursor, Acknowledged, ErasureConfirmed, InboxCase, InboxPage, StatusReportRequest};
use crate::app::sending::listing::{ReferralPage, ReferralQuery};
use crate::app::sending::referrals::{ReferralView, Submitted};
use crate::domain::lifecycle::ReferralStatus;
use crate::app::sending::withdrawal::{SubjectWithdrawalAnswer, WithdrawalAnswer, WithdrawalRequest};
use crate::audit::Action;
use crate::domain::SubjectRef;
use crate::app::access::{Dpos, Overseers, Recipients, Senders, SendersAndRepliers, StatisticsReaders};
use crate::app::statistics::StatisticsAnswer;
use crate::domain::statistics::Period;

type Result<T, E = Problem> = std::result::Result<T, E>;

pub async fn submit_referral(State(state): State<AppState>, Caller(caller): Caller, headers: HeaderMap, body: Body) -> Result<Response> {
    // Who may call is settled before the body is read: an unauthorised
    // caller is refused (and audited) whatever it sends.
    let caller = state.gateway.authorize::<Senders>(&caller).await?;
    let text = json_text(&headers, body, state.body_limit).await?;
    let submitted = state.gateway.submit(&caller, &text).await?;
    Ok(submitted_response(&state, submitted))
}

/// `POST /v1/inbox/{packet_id}/replies`: a reply case answering a request
/// of the caller's inbox, answered as a submission is.
pub async fn reply_to_case(
    State(state): State<AppState>,
    Caller(caller): Caller,
    PathParam(packet_id): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let caller = state.gateway.authorize::<Recipients>(&caller).await?;
    let text = json_text(&headers, body, state.body_limit).await?;
    let submitted = state.gateway.reply_to_case(&caller, &packet_id, &text).await?;
    Ok(submitted_response(&state, submitted))
}

/// `202` with the referral's address, or the denial as a problem.
fn submitted_response(state: &AppState, submitted: Submitted) -> Response {
    match submitted {
        Submitted::Queued { answer, replayed } => {
            if !replayed {
                state.metrics.decision(true, &[]);
            }
            let location = HeaderValue::from_str(&format!("/v1/referrals/{}", answer.referral_id));
            let mut response = (StatusCode::ACCEPTED, Json(answer)).into_response();
            if let Ok(location) = location {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Submitted::Denied { answer, replayed } => {
            if !replayed {
                state.metrics.decision(false, &reason_strings(&answer.reason_codes));
            }
            Problem::referral_denied(answer).into_response()
        }
    }
}

pub async fn get_referral(State(state): State<AppState>, Caller(caller): Caller, PathParam(id): PathParam) -> Result<Json<ReferralView>> {
    let caller = state.gateway.authorize::<SendersAndRepliers>(&caller).await?;
    Ok(Json(state.gateway.referral(&caller, &id).await?))
}

/// `GET /v1/referrals`: the caller's organisation's referrals, filtered.
pub async fn get_referrals(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: std::result::Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReferralPage>> {
    let caller = state.gateway.authorize::<SendersAndRepliers>(&caller).await?;
    let Query(params) = query.map_err(|_| Problem::invalid_query("the query string is malformed"))?;
    let mut seen = std::collections::BTreeSet::new();
    let mut listing = ReferralQuery::default();
    for (key, value) in &params {
        if !seen.insert(key.as_str()) {
            return Err(Problem::invalid_query("a query parameter is given more than once"));
        }
        match key.as_str() {
            "status" => {
                // A set: each status once, however often named (at most the 17 there are).
                let statuses: std::collections::BTreeSet<ReferralStatus> = value
                    .split(',')
                    .map(|status| status.parse::<ReferralStatus>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| Problem::invalid_query("status must be referral statuses, separated by commas"))?;
                listing.statuses = statuses.into_iter().collect();
            }
            "purpose" => listing.purpose = Some(value.parse().map_err(|_| Problem::invalid_query("purpose is not a known purpose"))?),
            "priority" => listing.priority = Some(value.parse().map_err(|_| Problem::invalid_query("priority must be emergency, urgent or normal"))?),
            "overdue" => {
                listing.overdue = Some(match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(Problem::invalid_query("overdue must be true or false")),
                });
            }
            "from" => listing.from_ms = Some(time_ms(value, "from")?),
            "to" => listing.to_ms = Some(time_ms(value, "to")?),
            "cursor" => listing.cursor = Some(value.clone()),
            "limit" => listing.limit = Some(value.parse().map_err(|_| Problem::invalid_query("limit must be an integer"))?),
            _ => return Err(Problem::invalid_query("unknown query parameter")),
        }
    }
    Ok(Json(state.gateway.referrals(&caller, listing).await?))
}

pub async fn get_policies(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<PolicyList>> {
    let caller = state.gateway.authorize::<Dpos>(&caller).await?;
    Ok(Json(state.gateway.policies(&caller).await?))
}

/// `GET /v1/overrides`: the emergency overrides awaiting a DPO's approval.
pub async fn get_overrides(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<OverrideList>> {
    let caller = state.gateway.authorize::<Dpos>(&caller).await?;
    Ok(Json(state.gateway.awaiting_overrides(&caller).await?))
}

pub async fn approve_override(State(state): State<AppState>, Caller(caller): Caller, PathParam(referral_id): PathParam) -> Result<Json<OverrideDecided>> {
    let caller = state.gateway.authorize::<Dpos>(&caller).await?;
    Ok(Json(state.gateway.decide_override(&caller, &referral_id, Verdict::Approve).await?))
}

pub async fn reject_override(State(state): State<AppState>, Caller(caller): Caller, PathParam(referral_id): PathParam) -> Result<Json<OverrideDecided>> {
    let caller = state.gateway.authorize::<Dpos>(&caller).await?;
    Ok(Json(state.gateway.decide_override(&caller, &referral_id, Verdict::Reject).await?))
}

pub async fn put_policies(State(state): State<AppState>, Caller(caller): Caller, headers: HeaderMap, body: Body) -> Result<Response> {
    let caller = state.gateway.authorize::<Dpos>(&caller).await?;
    let upload: PolicyUpload = json_body(&headers, body, state.body_limit).await?;
    let stored = state.gateway.upload_policy(&caller, upload).await?;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

/// A policy version's number from the path; anything else names no version.
pub(crate) fn version_number(text: &str) -> Result<i64> {
    text.parse::<i64>().ok().filter(|n| *n > 0 && !text.starts_with('+')).ok_or_else(|| AppError::NotFound.into())
}

pub async fn get_policy_version(State(state): State<AppState>, Caller(caller): Caller, PathParam(number): PathParam) -> Result<Json<PolicyVersionView>> {
    let caller = state.gateway.authorize::<Dpos>(&caller).await?;
    Ok(Json(state.gateway.policy_version(&caller, version_number(&number)?).await?))
}

pub async fn approve_policy(State(state): State<AppState>, Caller(caller): Caller, PathParam(number): PathParam, headers: HeaderMap, body: Body) -> Result<Json<PolicyReviewed>> {
    review_policy(state, caller, number, Verdict::Approve, headers, body).await
}

pub async fn reject_policy(State(state): State<AppState>, Caller(caller): Caller, PathParam(number): PathParam, headers: HeaderMap, body: Body) -> Result<Json<PolicyReviewed>> {
    review_policy(state, caller, number, Verdict::Reject, headers, body).await
}

async fn review_policy(state: AppState, caller: Principal, number: String, verdict: Verdict, headers: HeaderMap, body: Body) -> Result<Json<PolicyReviewed>> {
    let caller = state.gateway.authorize::<Dpos>(&caller).await?;
    let number = version_number(&number)?;
    let request: ReviewRequest = json_body(&headers, body, state.body_limit).await?;
    Ok(Json(state.gateway.review_policy(&caller, number, verdict, request).await?))
}

pub async fn restore_policy(State(state): State<AppState>, Caller(caller): Caller, PathParam(number): PathParam, headers: HeaderMap, body: Body) -> Result<Response> {
    let caller = state.gateway.authorize::<Dpos>(&caller).await?;
    let number = version_number(&number)?;
    let request: ReviewRequest = json_body(&headers, body, state.body_limit).await?;
    let stored = state.gateway.restore_policy(&caller, number, request).await?;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

pub async fn simulate(State(state): State<AppState>, Caller(caller): Caller, headers: HeaderMap, body: Body) -> Result<Json<SimulationAnswer>> {
    let caller = state.gateway.authorize::<Dpos>(&caller).await?;
    let simulation: Simulation = json_body(&headers, body, state.body_limit).await?;
    Ok(Json(state.gateway.simulate(&caller, simulation).await?))
}

fn time_ms(value: &str, name: &str) -> Result<i64> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| Problem::invalid_query(&format!("{name} must be an RFC 3339 time")))
}

pub async fn get_audit(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: std::result::Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>> {
    let caller = state.gateway.authorize::<Overseers>(&caller).await?;
    let Query(params) = query.map_err(|_| Problem::invalid_query("the query string is malformed"))?;
    let mut audit = AuditQuery::default();
    for (key, value) in &params {
        match key.as_str() {
            "from" => audit.from_ms = Some(time_ms(value, "from")?),
            "to" => audit.to_ms = Some(time_ms(value, "to")?),
            "action" => audit.action = Some(Action::parse(value).ok_or_else(|| Problem::invalid_query("action is not a known action"))?),
            "org" => audit.org = Some(value.clone()),
            "referral_id" => audit.referral_id = Some(value.clone()),
            "subject_ref" => audit.subject_ref = Some(subject_ref(value)?),
            "cursor" => audit.cursor = Some(parse_cursor(value).ok_or_else(|| Problem::invalid_query("cursor is malformed"))?),
            "limit" => audit.limit = Some(value.parse().map_err(|_| Problem::invalid_query("limit must be an integer"))?),
            _ => return Err(Problem::invalid_query("unknown query parameter")),
        }
    }
    Ok(Json(state.gateway.audit_log(&caller, audit).await?))
}

pub async fn get_disclosures(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: std::result::Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Disclosures>> {
    let caller = state.gateway.authorize::<Overseers>(&caller).await?;
    let Query(params) = query.map_err(|_| Problem::invalid_query("the query string is malformed"))?;
    if params.keys().any(|k| k != "subject_ref") {
        return Err(Problem::invalid_query("unknown query parameter"));
    }
    let subject_ref = subject_ref(params.get("subject_ref").ok_or_else(|| Problem::invalid_query("subject_ref is required"))?)?;
    Ok(Json(state.gateway.disclosures(&caller, &subject_ref).await?))
}

pub async fn get_subject_report(State(state): State<AppState>, Caller(caller): Caller, PathParam(subject): PathParam) -> Result<Json<SubjectReport>> {
    let caller = state.gateway.authorize::<Overseers>(&caller).await?;
    let subject_ref = subject_ref(&subject)?;
    Ok(Json(state.gateway.subject_report(&caller, &subject_ref).await?))
}

/// The released statistics of one closed period: `period` is the one
/// parameter, and it is required (no ad-hoc filters).
pub async fn get_statistics(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: std::result::Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<StatisticsAnswer>> {
    let caller = state.gateway.authorize::<StatisticsReaders>(&caller).await?;
    let Query(params) = query.map_err(|_| Problem::invalid_query("the query string is malformed"))?;
    if params.keys().any(|k| k != "period") {
        return Err(Problem::invalid_query("unknown query parameter: the tables are predefined; only period may be given"));
    }
    let period = params.get("period").ok_or_else(|| Problem::invalid_query("period is required: a month (2026-11) or a quarter (2026-Q4)"))?;
    let period = Period::parse(period).map_err(|_| Problem::invalid_query("period must be a month (2026-11) or a quarter (2026-Q4)"))?;
    Ok(Json(state.gateway.statistics(&caller, period).await?))
}

/// A subject reference as the sender gives it; anything else (a name typed
/// by mistake) is refused without being repeated.
fn subject_ref(value: &str) -> Result<String> {
    SubjectRef::parse(value)
        .map(String::from)
        .map_err(|_| Problem::invalid_query("subject_ref must be an opaque reference (8 to 64 characters, with a digit)"))
}

pub async fn get_inbox(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: std::result::Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InboxPage>> {
    let caller = state.gateway.authorize::<Recipients>(&caller).await?;
    let Query(params) = query.map_err(|_| Problem::invalid_query("the query string is malformed"))?;
    let mut limit = crate::app::recipient::cases::MAX_INBOX_PAGE;
    let mut order = None;
    for (key, value) in &params {
        match key.as_str() {
            "cursor" => {}
            "limit" => limit = value.parse().map_err(|_| Problem::invalid_query("limit must be an integer"))?,
            "order" => order = Some(value.parse().map_err(|_| Problem::invalid_query("order must be due or arrival"))?),
            _ => return Err(Problem::invalid_query("unknown query parameter")),
        }
    }
    Ok(Json(state.gateway.inbox(&caller, order, params.get("cursor").map(String::as_str), limit).await?))
}

pub async fn get_inbox_case(State(state): State<AppState>, Caller(caller): Caller, PathParam(packet_id): PathParam) -> Result<Json<InboxCase>> {
    let caller = state.gateway.authorize::<Recipients>(&caller).await?;
    Ok(Json(state.gateway.inbox_case(&caller, &packet_id).await?))
}

pub async fn confirm_erasure(State(state): State<AppState>, Caller(caller): Caller, PathParam(packet_id): PathParam) -> Result<Json<ErasureConfirmed>> {
    let caller = state.gateway.authorize::<Recipients>(&caller).await?;
    Ok(Json(state.gateway.confirm_erasure(&caller, &packet_id).await?))
}

pub async fn acknowledge(State(state): State<AppState>, Caller(caller): Caller, PathParam(packet_id): PathParam) -> Result<Json<Acknowledged>> {
    let caller = state.gateway.authorize::<Recipients>(&caller).await?;
    Ok(Json(state.gateway.acknowledge(&caller, &packet_id).await?))
}

pub async fn report_status(
    State(state): State<AppState>,
    Caller(caller): Caller,
    PathParam(packet_id): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let caller = state.gateway.authorize::<Recipients>(&caller).await?;
    let report = StatusReportRequest::parse(&json_body::<Value>(&headers, body, state.body_limit).await?)?;
    let answer = state.gateway.report_status(&caller, &packet_id, report).await?;
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

pub async fn refer_onward(
    State(state): State<AppState>,
    Caller(caller): Caller,
    PathParam(packet_id): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let caller = state.gateway.authorize::<Recipients>(&caller).await?;
    let request = OnwardReferralRequest::parse(&json_body::<Value>(&headers, body, state.body_limit).await?)?;
    let answer = state.gateway.refer_onward(&caller, &packet_id, request).await?;
    let status = if answer.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(answer)).into_response())
}

pub async fn withdraw_consent(
    State(state): State<AppState>,
    Caller(caller): Caller,
    PathParam(id): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<WithdrawalAnswer>> {
    let caller = state.gateway.authorize::<SendersAndRepliers>(&caller).await?;
    let scope = WithdrawalRequest::parse(&json_body::<Value>(&headers, body, state.body_limit).await?)?;
    Ok(Json(state.gateway.withdraw_consent(&caller, &id, &scope).await?))
}

/// Asks other gateways whether a search there meets this family-tracing request (issue 22 §2).
pub async fn find_matches(
    State(state): State<AppState>,
    Caller(caller): Caller,
    PathParam(id): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<crate::app::matching::asking::MatchReport>> {
    let caller = state.gateway.authorize::<crate::app::access::Senders>(&caller).await?;
    let request: crate::app::matching::asking::MatchRequest = json_body(&headers, body, state.body_limit).await?;
    Ok(Json(state.gateway.find_matches(&caller, &id, request.gateways).await?))
}

pub async fn withdraw_subject_consent(
    State(state): State<AppState>,
    Caller(caller): Caller,
    PathParam(subject): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SubjectWithdrawalAnswer>> {
    let caller = state.gateway.authorize::<SendersAndRepliers>(&caller).await?;
    let subject_ref = subject_ref(&subject)?;
    let scope = WithdrawalRequest::parse(&json_body::<Value>(&headers, body, state.body_limit).await?)?;
    Ok(Json(state.gateway.withdraw_subject_consent(&caller, &subject_ref, &scope).await?))
}

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database answers, the keys work and a valid policy is active.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = state.gateway.database_ready().await;
    let keys = state.gateway.keys().seal(b"ready", b"readyz").and_then(|s| state.gateway.keys().open(&s, b"readyz")).is_ok();
    let policy = state.gateway.policy();
    let status = if database && keys { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let word = |ok: bool| if ok { "ok" } else { "failing" };
    let body = json!({
        "status": word(database && keys),
        "database": word(database),
        "keys": word(keys),
        "policy": { "status": "ok", "number": policy.number, "version": policy.policy.version() },
    });
    (status, Json(body)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let depth = state.gateway.store.outbox_depth().await.unwrap_or(-1);
    let due: Vec<_> = state.gateway.agreements_due().into_iter().map(|a| a.due).collect();
    let overdue = state.gateway.overdue_counts().await.ok();
    let callbacks = state.gateway.callback_backlog().await;
    let now = GaugesNow {
        outbox_depth: depth,
        erased: state.gateway.retention_erasures(),
        agreements_due: &due,
        overdue: overdue.as_deref(),
        callbacks: &callbacks,
    };
    let mut response = state.metrics.render(&now).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    response
}

pub async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json((*state.openapi).clone())
}

pub async fn not_found() -> Problem {
    Problem::not_found()
}

pub async fn method_not_allowed() -> Problem {
    Problem::method_not_allowed()
}
