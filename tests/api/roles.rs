//! Role boundaries: what each caller may do, how each refusal is answered,
//! and that every refusal is in the audit log.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{fixture, policy_files, spawn_app, variant, Backend, Reply, TestApp, Who};
use crate::on_both_backends;

on_both_backends!(every_role_boundary_is_kept_and_every_refusal_audited, public_endpoints_need_no_credentials);

/// What a call must come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// This success status.
    Ok(u16),
    /// `404 not-found` (not a refusal: not audited as one).
    NotFound,
    /// `403 forbidden` with this `code`.
    Forbidden(&'static str),
    /// `401 unauthenticated` with this `code`.
    Unauthenticated(&'static str),
}

#[derive(Debug, Clone)]
struct Call {
    who: Who,
    authorization: Option<&'static str>,
    method: Method,
    path: String,
    body: Option<Value>,
    /// Send the body as `text/plain` rather than JSON.
    plain_text: bool,
    expect: Expect,
}

const SUBJECT: &str = "ITA-2026-000202";

/// The /v1 operations, each with a body it would accept from a caller who may call it.
fn operations(own_referral: &str, key: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::POST, "/v1/referrals".to_owned(), Some(variant("returnee_hiv_reintegration", key, None))),
        (Method::GET, format!("/v1/referrals/{own_referral}"), None),
        (Method::GET, "/v1/policies".to_owned(), None),
        (Method::PUT, "/v1/policies".to_owned(), Some(json!({ "files": policy_files(), "note": "same set again" }))),
        (
            Method::POST,
            "/v1/policies/simulate".to_owned(),
            Some(json!({ "referral": fixture("returnee_hiv_reintegration"), "to": "nga-employment-service" })),
        ),
        (Method::GET, "/v1/audit".to_owned(), None),
        (Method::GET, format!("/v1/disclosures?subject_ref={SUBJECT}"), None),
        (Method::GET, format!("/v1/subjects/{SUBJECT}/report"), None),
        (Method::POST, format!("/v1/subjects/{SUBJECT}/consent-withdrawal"), Some(json!({}))),
        (Method::POST, format!("/v1/referrals/{own_referral}/consent-withdrawal"), Some(json!({}))),
    ]
}

fn table(own_referral: &str) -> Vec<Call> {
    use Expect::{Forbidden as F, NotFound, Ok, Unauthenticated as U};
    const MISSING: Expect = F("missing_role");
    // One row per caller: the expectation for each of `operations`, in order.
    let by_caller: Vec<(Who, Option<&'static str>, [Expect; 10])> = vec![
        (Who::IomRome, None, [Ok(202), Ok(200), MISSING, MISSING, MISSING, MISSING, MISSING, MISSING, Ok(200), Ok(200)]),
        // Another submitter of the same country: its own referrals only.
        (Who::ItaNrm, None, [Ok(202), NotFound, MISSING, MISSING, MISSING, MISSING, MISSING, MISSING, Ok(200), NotFound]),
        (Who::Dpo, None, [MISSING, MISSING, Ok(200), Ok(201), Ok(200), Ok(200), Ok(200), Ok(200), MISSING, MISSING]),
        (Who::Auditor, None, [MISSING, MISSING, MISSING, MISSING, MISSING, Ok(200), Ok(200), Ok(200), MISSING, MISSING]),
        // A recipient follows and withdraws only the reply cases it sent: it has none.
        (Who::Recipient, None, [MISSING, NotFound, MISSING, MISSING, MISSING, MISSING, MISSING, MISSING, Ok(200), NotFound]),
        // A Nigerian organisation gets nothing from Italy's gateway, whatever its roles.
        (Who::Foreign, None, [F("org_not_served_here"); 10]),
        (Who::Stranger, None, [U("unknown_certificate"); 10]),
        (Who::Nobody, None, [U("missing_credentials"); 10]),
        (Who::Nobody, Some("Basic xyz"), [U("malformed_authorization"); 10]),
        // A bad Authorization header is not rescued by a good certificate.
        (Who::IomRome, Some("Basic xyz"), [U("malformed_authorization"); 10]),
        (Who::Dpo, Some("Bearer "), [U("malformed_authorization"); 10]),
        (Who::Nobody, Some("Bearer eyJhbGciOiJub25lIn0.e30."), [U("bearer_not_configured"); 10]),
        (Who::Dpo, Some("Bearer eyJhbGciOiJub25lIn0.e30."), [U("bearer_not_configured"); 10]),
    ];
    let mut calls = Vec::new();
    for (row, (who, authorization, expects)) in by_caller.into_iter().enumerate() {
        for ((method, path, body), expect) in operations(own_referral, &format!("roles-row-{row}")).into_iter().zip(expects) {
            calls.push(Call { who, authorization, method, path, body, plain_text: false, expect });
        }
    }
    // A caller who may not call an operation is refused whatever the body:
    // the role is checked before the body is read.
    let garbage = [
        (Who::Recipient, Method::POST, "/v1/referrals", json!({})),
        (Who::Dpo, Method::POST, "/v1/referrals", json!({ "nickname": "x" })),
        (Who::Auditor, Method::PUT, "/v1/policies", json!({})),
        (Who::IomRome, Method::PUT, "/v1/policies", json!({ "files": {} })),
        (Who::Auditor, Method::POST, "/v1/policies/simulate", json!({ "nonsense": 1 })),
        // An auditor reads the log of sign-offs but never signs off.
        (Who::Auditor, Method::POST, "/v1/policies/1/approve", json!({})),
        (Who::Auditor, Method::POST, "/v1/policies/1/reject", json!({ "note": "x" })),
        (Who::Auditor, Method::POST, "/v1/policies/1/restore", json!({})),
        (Who::IomRome, Method::GET, "/v1/policies/1", json!({})),
        (Who::Recipient, Method::POST, "/v1/policies/simulate", json!([])),
    ];
    for (who, method, path, body) in garbage {
        for plain_text in [false, true] {
            let body = Some(body.clone());
            calls.push(Call { who, authorization: None, method: method.clone(), path: path.to_owned(), body, plain_text, expect: MISSING });
        }
    }
    for plain_text in [false, true] {
        calls.push(Call {
            who: Who::Foreign,
            authorization: None,
            method: Method::POST,
            path: "/v1/referrals".to_owned(),
            body: Some(json!({})),
            plain_text,
            expect: F("org_not_served_here"),
        });
    }
    calls
}

async fn call(app: &TestApp, call: &Call) -> Reply {
    let mut request = app.request(call.who, call.method.clone(), &call.path);
    if let Some(authorization) = call.authorization {
        request = request.header("authorization", authorization);
    }
    match &call.body {
        Some(body) if call.plain_text => request = request.header("content-type", "text/plain").body(body.to_string()),
        Some(body) => request = request.json(body),
        None => {}
    }
    app.send(request).await
}

async fn every_role_boundary_is_kept_and_every_refusal_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let submitted = app.submit(Who::IomRome, &variant("returnee_hiv_reintegration", "roles-own-referral", None)).await;
    assert_eq!(submitted.status, 202, "{}", submitted.text);
    let own_referral = submitted.body["referral_id"].as_str().unwrap().to_owned();

    // (actor org, actor subject, outcome, code) of each refusal, in order.
    let mut refusals: Vec<(Value, String, &str, &str)> = Vec::new();
    for c in table(&own_referral) {
        let reply = call(&app, &c).await;
        let what = format!("{:?} {:?} {} {} (plain text {}): {} {}", c.who, c.authorization, c.method, c.path, c.plain_text, reply.status, reply.text);
        match c.expect {
            Expect::Ok(status) => {
                assert_eq!(reply.status, status, "{what}");
                assert_eq!(reply.content_type, "application/json", "{what}");
            }
            Expect::NotFound => {
                assert_eq!(reply.status, 404, "{what}");
                assert_eq!(reply.problem(), "not-found", "{what}");
            }
            Expect::Forbidden(code) => {
                assert_eq!(reply.status, 403, "{what}");
                assert_eq!(reply.problem(), "forbidden", "{what}");
                assert_eq!(reply.body["code"], code, "{what}");
                refusals.push((json!(c.who.org().unwrap()), c.who.fingerprint().unwrap(), "forbidden", code));
            }
            Expect::Unauthenticated(code) => {
                assert_eq!(reply.status, 401, "{what}");
                assert_eq!(reply.problem(), "unauthenticated", "{what}");
                assert_eq!(reply.body["code"], code, "{what}");
                let subject = c.who.fingerprint().unwrap_or_else(|| "anonymous".to_owned());
                refusals.push((Value::Null, subject, "unauthenticated", code));
            }
        }
    }
    assert!(refusals.len() > 60, "the table refuses most calls: {}", refusals.len());

    // The refusals stored nothing: two submissions by the submitters only.
    assert_eq!(app.count("referrals").await, 3);

    // Every refusal is one audit entry, in the order they happened.
    let audit = app.get_query(Who::Dpo, "/v1/audit", &[("action", "access.refused"), ("limit", "1000")]).await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    assert!(audit.body["next_cursor"].is_null());
    let entries = audit.body["entries"].as_array().unwrap();
    let audited: Vec<(Value, String, &str, Vec<&str>)> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["action"], "access.refused");
            let reasons = e["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
            (e["actor"]["org"].clone(), e["actor"]["subject"].as_str().unwrap().to_owned(), e["outcome"].as_str().unwrap(), reasons)
        })
        .collect();
    let expected: Vec<(Value, String, &str, Vec<&str>)> =
        refusals.into_iter().map(|(org, subject, outcome, code)| (org, subject, outcome, vec![code])).collect();
    assert_eq!(audited.len(), expected.len());
    for (n, (got, want)) in audited.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "refusal {n}");
    }
}

async fn public_endpoints_need_no_credentials(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
        for who in [Who::Nobody, Who::Stranger, Who::Recipient] {
            let reply = app.get(who, path).await;
            assert_eq!(reply.status, 200, "{who:?} GET {path}: {}", reply.text);
        }
    }
    // Nothing was refused, so nothing was audited as refused.
    let audit = app.get_query(Who::Auditor, "/v1/audit", &[("action", "access.refused")]).await;
    assert_eq!(audit.status, 200);
    assert_eq!(audit.body["entries"], json!([]));
}
