//! Bad requests: each is refused with the right problem, nothing is stored,
//! and no answer repeats a personal value that was sent.

use serde_json::{json, Value};

use crate::helpers::{fixture, personal_values, spawn_app, Backend, Reply, TestApp, Who};
use crate::on_both_backends;

on_both_backends!(
    bad_submissions_are_refused_and_leave_nothing,
    unknown_routes_and_methods_are_problems,
    bad_submissions_do_not_lose_what_was_accepted,
    malformed_bodies_change_nothing,
);

const FIXTURE: &str = "returnee_hiv_reintegration";
const LIMIT: usize = 65536;

/// A bad submission and how it must be refused.
struct Bad {
    what: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    problem: &'static str,
    /// A `problems[].field` the answer must name.
    field: Option<&'static str>,
}

fn changed(change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut referral = fixture(FIXTURE);
    change(&mut referral);
    serde_json::to_vec(&referral).unwrap()
}

fn given_names() -> String {
    fixture(FIXTURE)["case"]["identity"]["given_names"].as_str().unwrap().to_owned()
}

fn full_name() -> String {
    let identity = &fixture(FIXTURE)["case"]["identity"];
    format!("{} {}", identity["given_names"].as_str().unwrap(), identity["family_name"].as_str().unwrap())
}

/// The fixture's text with `insert` placed right after the `{` that opens `after`'s object.
fn inserted(after: &str, insert: &str) -> Vec<u8> {
    let text = serde_json::to_string(&fixture(FIXTURE)).unwrap();
    let at = text.find(after).unwrap() + after.len();
    assert_eq!(&text[at..at + 1], "{");
    format!("{}{insert}{}", &text[..=at], &text[at + 1..]).into_bytes()
}

/// A valid submission padded with trailing whitespace to exactly `size` bytes.
fn padded(size: usize) -> Vec<u8> {
    let mut body = serde_json::to_vec(&fixture(FIXTURE)).unwrap();
    assert!(body.len() < size);
    body.resize(size, b' ');
    body
}

fn bad_submissions() -> Vec<Bad> {
    let json = Some("application/json");
    let bad = |what, content_type, body, status, problem, field| Bad { what, content_type, body, status, problem, field };
    let name = given_names();
    let mut not_utf8 = serde_json::to_vec(&fixture(FIXTURE)).unwrap();
    let at = not_utf8.windows(name.len()).position(|w| w == name.as_bytes()).unwrap();
    not_utf8[at] = 0xff;
    vec![
        bad("malformed JSON", json, br#"{"idempotency_key": "x", "purpose": "#.to_vec(), 400, "malformed-json", None),
        bad(
            "malformed JSON holding a name",
            json,
            format!(r#"{{"case": {{"identity": {{"given_names": "{name}" "#).into_bytes(),
            400,
            "malformed-json",
            None,
        ),
        bad("empty body", json, Vec::new(), 400, "malformed-json", None),
        bad(
            "unknown top-level field",
            json,
            changed(|r| r["nickname"] = json!(name)),
            400,
            "invalid-request",
            Some("nickname"),
        ),
        bad(
            "unknown nested field",
            json,
            changed(|r| r["case"]["identity"]["nickname"] = json!(name)),
            400,
            "invalid-request",
            Some("case.identity.nickname"),
        ),
        bad(
            "unknown field named like the person",
            json,
            changed(|r| r["case"]["identity"][full_name()] = json!(true)),
            400,
            "invalid-request",
            Some("case.identity"),
        ),
        bad(
            "invalid country code",
            json,
            changed(|r| r["case"]["identity"]["nationalities"][0] = json!("ZYX")),
            400,
            "invalid-request",
            Some("case.identity.nationalities[0]"),
        ),
        bad(
            "invalid destination country",
            json,
            changed(|r| r["case"]["return_logistics"]["destination"]["country"] = json!("nga")),
            400,
            "invalid-request",
            Some("case.return_logistics.destination.country"),
        ),
        bad(
            "missing consent",
            json,
            changed(|r| {
                r.as_object_mut().unwrap().remove("consent");
            }),
            400,
            "invalid-request",
            Some("consent"),
        ),
        bad("oversized body", json, padded(LIMIT + 1), 413, "payload-too-large", None),
        bad("text/plain", Some("text/plain"), serde_json::to_vec(&fixture(FIXTURE)).unwrap(), 415, "unsupported-media-type", None),
        bad("no content type", None, serde_json::to_vec(&fixture(FIXTURE)).unwrap(), 415, "unsupported-media-type", None),
        bad("JSON-like content type", Some("application/jsonp"), serde_json::to_vec(&fixture(FIXTURE)).unwrap(), 415, "unsupported-media-type", None),
        bad("not UTF-8", json, not_utf8, 400, "invalid-request", Some("(body)")),
        bad("duplicated key", json, inserted("", r#""purpose":"return","#), 400, "invalid-request", Some("purpose")),
        bad(
            "duplicated nested key",
            json,
            inserted(r#""identity":"#, r#""sex":"female","#),
            400,
            "invalid-request",
            Some("case.identity.sex"),
        ),
        bad(
            "duplicated key named like the person",
            json,
            inserted(r#""identity":"#, &format!(r#""{0}":1,"{0}":2,"#, full_name())),
            400,
            "invalid-request",
            Some("case.identity"),
        ),
    ]
}

async fn post(app: &TestApp, bad: &Bad) -> Reply {
    let mut request = app.request(Who::IomRome, reqwest::Method::POST, "/v1/referrals").body(bad.body.clone());
    if let Some(content_type) = bad.content_type {
        request = request.header("content-type", content_type);
    }
    app.send(request).await
}

/// Sends every bad submission and checks each answer.
async fn send_bad_submissions(app: &TestApp) {
    let personal = personal_values();
    assert!(personal.contains(&given_names()));
    for bad in bad_submissions() {
        let reply = post(app, &bad).await;
        let what = format!("{}: {} {}", bad.what, reply.status, reply.text);
        assert_eq!(reply.status, bad.status, "{what}");
        assert_eq!(reply.content_type, "application/problem+json", "{what}");
        assert_eq!(reply.problem(), bad.problem, "{what}");
        assert_eq!(reply.body["status"], bad.status, "{what}");
        if let Some(field) = bad.field {
            let fields: Vec<&str> = reply.body["problems"].as_array().unwrap().iter().map(|p| p["field"].as_str().unwrap()).collect();
            assert!(fields.contains(&field), "{what}: expected a problem at {field}");
        }
        for value in &personal {
            assert!(!reply.text.contains(value.as_str()), "{}: the answer repeats a personal value", bad.what);
        }
        for part in full_name().split(' ') {
            assert!(!reply.text.contains(part), "{}: the answer repeats a name", bad.what);
        }
    }
}

async fn bad_submissions_are_refused_and_leave_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    send_bad_submissions(&app).await;
    assert_eq!(app.count("referrals").await, 0);
    assert_eq!(app.count("referral_events").await, 0);
    assert_eq!(app.count("outbox").await, 0);
    assert_eq!(app.sql_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'referral.submit'").await, 0);

    // The limit is the configured one, inclusive.
    let exactly = app.post_raw(Who::IomRome, "/v1/referrals", "application/json", padded(LIMIT)).await;
    assert_eq!(exactly.status, 202, "{}", exactly.text);
    assert_eq!(app.count("referrals").await, 1);
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let app = spawn_app(backend).await;
    use reqwest::Method;
    let cases = [
        (Method::GET, "/v1/nothing", 404, "not-found"),
        (Method::GET, "/nothing", 404, "not-found"),
        (Method::POST, "/v1/referral", 404, "not-found"),
        (Method::GET, "/v1/referrals/a/b", 404, "not-found"),
        (Method::DELETE, "/v1/referrals", 405, "method-not-allowed"),
        (Method::PUT, "/v1/referrals", 405, "method-not-allowed"),
        (Method::DELETE, "/v1/referrals/some-id", 405, "method-not-allowed"),
        (Method::PATCH, "/v1/policies", 405, "method-not-allowed"),
        (Method::GET, "/v1/policies/simulate", 405, "method-not-allowed"),
        (Method::POST, "/v1/audit", 405, "method-not-allowed"),
        (Method::POST, "/healthz", 405, "method-not-allowed"),
    ];
    for who in [Who::IomRome, Who::Dpo, Who::Nobody] {
        for (method, path, status, problem) in &cases {
            let reply = app.send(app.request(who, method.clone(), path).json(&json!({}))).await;
            assert_eq!(reply.status, *status, "{who:?} {method} {path}: {}", reply.text);
            assert_eq!(reply.problem(), *problem, "{who:?} {method} {path}");
            assert_eq!(reply.body["status"], *status);
        }
    }
}

async fn bad_submissions_do_not_lose_what_was_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    // The valid referral has the idempotency key every bad variant carries too.
    let accepted = app.submit(Who::IomRome, &fixture(FIXTURE)).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let id = accepted.body["referral_id"].as_str().unwrap().to_owned();

    send_bad_submissions(&app).await;

    let followed = app.get(Who::IomRome, &format!("/v1/referrals/{id}")).await;
    assert_eq!(followed.status, 200, "{}", followed.text);
    assert_eq!(followed.body["status"], "queued");
    assert_eq!(followed.body["decision"], accepted.body["decision"]);
    assert_eq!(app.count("referrals").await, 1);
    assert_eq!(app.count("outbox").await, 1);

    // Resubmitting the valid body still replays the first answer.
    let again = app.submit(Who::IomRome, &fixture(FIXTURE)).await;
    assert_eq!((again.status, &again.body), (202, &accepted.body));
}

/// Found by the OpenAPI fuzzer (.ci/openapi-fuzz): serde fills a struct from
/// an array, by position, so `[null, null]` was read as `{}`, a withdrawal
/// of the whole consent; and it stopped reading after the first value, so
/// `{} x` was `{}` too. Every body of this API is one JSON object. And a
/// null list in a withdrawal read as absent: `{"categories": null}` took
/// back the whole consent.
async fn malformed_bodies_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let referral = fixture(FIXTURE);
    let submitted = app.submit(Who::IomRome, &referral).await;
    assert_eq!(submitted.status, 202, "{}", submitted.text);
    let id = submitted.body["referral_id"].as_str().unwrap().to_owned();
    let subject = referral["subject_ref"].as_str().unwrap();
    let files = crate::helpers::policy_files();

    let cases: Vec<(Who, reqwest::Method, String, String, &str)> = vec![
        (Who::IomRome, reqwest::Method::POST, format!("/v1/referrals/{id}/consent-withdrawal"), "[null, null]".into(), "invalid-request"),
        (Who::IomRome, reqwest::Method::POST, format!("/v1/referrals/{id}/consent-withdrawal"), "[]".into(), "invalid-request"),
        (Who::IomRome, reqwest::Method::POST, format!("/v1/referrals/{id}/consent-withdrawal"), "{} x".into(), "malformed-json"),
        (Who::IomRome, reqwest::Method::POST, format!("/v1/referrals/{id}/consent-withdrawal"), r#"{"categories": null}"#.into(), "invalid-request"),
        (Who::IomRome, reqwest::Method::POST, format!("/v1/subjects/{subject}/consent-withdrawal"), r#"{"purposes": ["return"], "recipients": null}"#.into(), "invalid-request"),
        (Who::IomRome, reqwest::Method::POST, format!("/v1/subjects/{subject}/consent-withdrawal"), "[null]".into(), "invalid-request"),
        (Who::IomRome, reqwest::Method::POST, format!("/v1/subjects/{subject}/consent-withdrawal"), "{}{}".into(), "malformed-json"),
        (Who::Dpo, reqwest::Method::PUT, "/v1/policies".into(), json!([files, "array form"]).to_string(), "invalid-request"),
        (Who::Dpo, reqwest::Method::POST, "/v1/policies/simulate".into(), json!([referral]).to_string(), "invalid-request"),
    ];
    for (who, method, path, body, problem) in cases {
        let request = app.request(who, method.clone(), &path).header("content-type", "application/json").body(body.clone());
        let reply = app.send(request).await;
        assert_eq!((reply.status, reply.problem()), (400, problem), "{method} {path} {body}: {}", reply.text);
    }

    let after = app.get(Who::IomRome, &format!("/v1/referrals/{id}")).await;
    assert_eq!(after.body["status"], "queued", "{}", after.text);
    assert!(after.body["erasure"].is_null(), "{}", after.text);
    let policies = app.get(Who::Dpo, "/v1/policies").await;
    assert_eq!(policies.body["active"]["number"], 1, "{}", policies.text);
}
