//! Operating the gateway: liveness, readiness, metrics, and the OpenAPI
//! description matching the routes served.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{fixture, personal_values, spawn_app, subject_refs, variant, Backend, Who};
use crate::on_both_backends;

on_both_backends!(health_readiness_and_metrics);
on_both_backends!(the_statuses_sent_are_documented);

/// The value of the sample `name` (with its labels, as exposed), if present.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.trim().parse().unwrap()))
}

async fn health_readiness_and_metrics(backend: Backend) {
    let app = spawn_app(backend).await;
    let health = app.get(Who::Nobody, "/healthz").await;
    assert_eq!((health.status, &health.body), (200, &json!({ "status": "ok" })));

    let ready = app.get(Who::Nobody, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.body["status"], "ok");
    assert_eq!(ready.body["database"], "ok");
    assert_eq!(ready.body["keys"], "ok");
    assert_eq!(ready.body["policy"]["number"], 1);
    assert!(ready.body["policy"]["version"].as_str().unwrap().starts_with("sha256:"));

    let allowed = app.submit(Who::IomRome, &fixture("returnee_hiv_reintegration")).await;
    assert_eq!(allowed.status, 202);
    let replayed = app.submit(Who::IomRome, &fixture("returnee_hiv_reintegration")).await;
    assert_eq!(replayed.status, 202);
    let denied = app.submit(Who::IomRome, &variant("rejected_asylum_avr", "metrics-denied", Some("gmb-immigration"))).await;
    assert_eq!(denied.status, 422);
    let bad = app.post_raw(Who::IomRome, "/v1/referrals", "application/json", b"{".to_vec()).await;
    assert_eq!(bad.status, 400);
    let mut ids = Vec::new();
    for reply in [&allowed, &denied] {
        let id = reply.body["referral_id"].as_str().unwrap().to_owned();
        assert_eq!(app.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.status, 200);
        ids.push(id);
    }

    let reply = app.get(Who::Nobody, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply.content_type.starts_with("application/openmetrics-text"), "{}", reply.content_type);
    let metrics = reply.text;
    let expected = [
        (r#"rgw_http_requests_total{method="POST",route="/v1/referrals",status="202"}"#, 2.0),
        (r#"rgw_http_requests_total{method="POST",route="/v1/referrals",status="422"}"#, 1.0),
        (r#"rgw_http_requests_total{method="POST",route="/v1/referrals",status="400"}"#, 1.0),
        (r#"rgw_http_requests_total{method="GET",route="/v1/referrals/{id}",status="200"}"#, 2.0),
        (r#"rgw_http_requests_total{method="GET",route="/readyz",status="200"}"#, 1.0),
        // A replay is not a new decision.
        (r#"rgw_decisions_total{outcome="allow"}"#, 1.0),
        (r#"rgw_decisions_total{outcome="deny"}"#, 1.0),
        (r#"rgw_deny_reasons_total{reason="asylum_firewall"}"#, 1.0),
        ("rgw_outbox_depth", 1.0),
    ];
    for (name, value) in expected {
        assert_eq!(sample(&metrics, name), Some(value), "{name} in\n{metrics}");
    }
    assert!(metrics.contains("rgw_http_request_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.trim_end().ends_with("# EOF"));

    for id in &ids {
        assert!(!metrics.contains(id.as_str()), "a referral id is a label");
    }
    for value in subject_refs().into_iter().chain(personal_values()) {
        assert!(!metrics.contains(&value), "a reference or personal value is in the metrics");
    }
}

/// (method, path) of every operation in `schemas/openapi.yaml`.
fn documented() -> BTreeSet<(String, String)> {
    let openapi = referral_gateway::http::openapi_json().unwrap();
    let mut operations = BTreeSet::new();
    for (path, item) in openapi["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&method.as_str()) {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_is_what_is_served() {
    let served: BTreeSet<(String, String)> =
        referral_gateway::http::served_routes().into_iter().map(|(method, path)| (method.as_str().to_owned(), path.to_owned())).collect();
    let documented = documented();
    assert_eq!(served.len(), referral_gateway::http::served_routes().len(), "a route is listed twice");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "served but not in schemas/openapi.yaml: {undocumented:?}");
    assert!(unserved.is_empty(), "in schemas/openapi.yaml but not served: {unserved:?}");

    let app = spawn_app(Backend::Sqlite).await;
    let reply = app.get(Who::Nobody, "/v1/openapi.json").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/json");
    assert_eq!(reply.body, referral_gateway::http::openapi_json().unwrap());

    // Every documented operation is routed: called as the DPO (or a submitter), none is 404 or 405.
    let openapi = referral_gateway::http::openapi_json().unwrap();
    for (method, path) in &documented {
        let operation = &openapi["paths"][path][method.to_lowercase()];
        let url = path.replace("{id}", "00000000-0000-4000-8000-000000000000").replace("{number}", "1");
        // The DPO may decide overrides: a submitter is refused instead of
        // answered "no such override", so a 404 still means "not routed".
        let who = if path.starts_with("/v1/overrides/") { Who::IomRome } else { Who::Dpo };
        let mut request = app.request(who, method.parse().unwrap(), &url);
        if operation.get("requestBody").is_some() {
            request = request.json(&json!({}));
        }
        let reply = app.send(request).await;
        assert!(![404, 405].contains(&reply.status), "{method} {path}: {} {}", reply.status, reply.text);
        // What the description promises for this operation includes what came.
        let responses: &Value = &operation["responses"];
        assert!(responses.get(reply.status.to_string()).is_some(), "{method} {path}: {} is not a documented response", reply.status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_and_names_in_queries_leave_no_trace() {
    let app = spawn_app(Backend::Sqlite).await;
    // Any token is a valid HTTP method; it must not become a metric label.
    let custom = reqwest::Method::from_bytes(b"FOO123").unwrap();
    let reply = app.send(app.client(Who::Nobody).request(custom, app.url("/metrics"))).await;
    assert_eq!(reply.status, 405);
    let metrics = app.get(Who::Nobody, "/metrics").await.text;
    assert!(!metrics.contains("FOO123"), "{metrics}");
    assert!(metrics.contains("method=\"other\""), "{metrics}");

    // A name typed where a subject reference belongs is refused, not repeated.
    for path in ["/v1/disclosures?subject_ref=Amina%20Diallo", "/v1/audit?subject_ref=Amina%20Diallo"] {
        let reply = app.get(Who::Dpo, path).await;
        assert_eq!(reply.status, 400, "{path}");
        assert_eq!(reply.problem(), "invalid-request");
        assert!(!reply.text.contains("Amina"), "{}", reply.text);
    }
}

/// Every reference in `value` (a `$ref` keyword holding a string), with the
/// JSON pointer of where it stands.
fn references(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(object) => {
            for (key, member) in object {
                match (key.as_str(), member) {
                    ("$ref", Value::String(reference)) => out.push((at.to_owned(), reference.clone())),
                    _ => references(member, &format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")), out),
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                references(item, &format!("{at}/{index}"), out);
            }
        }
        _ => {}
    }
}

/// What code generators and API fuzzers need: the served document stands
/// alone (every reference is internal and resolves), it is OpenAPI 3.1 by
/// the OpenAPI Initiative's own schema (tests/fixtures/openapi), and the
/// bundled referral schema still validates as the parser does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_stands_alone_and_is_openapi_3_1() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = app.get(Who::Nobody, "/v1/openapi.json").await.body;

    let mut found = Vec::new();
    references(&document, "", &mut found);
    assert!(found.len() > 100, "the generated schemas are bundled: {} references", found.len());
    for (at, reference) in &found {
        let pointer = reference.strip_prefix('#').filter(|p| p.starts_with('/'));
        assert!(pointer.is_some(), "{at}: {reference} is not a reference inside the document");
        assert!(document.pointer(pointer.unwrap()).is_some(), "{at}: {reference} resolves to nothing");
    }
    let text = document.to_string();
    for external in ["referral.schema.json", "directory.schema.json", "\"$id\"", "\"$defs\""] {
        assert!(!text.contains(external), "{external} is left in the served document");
    }

    let meta: Value = serde_json::from_str(&std::fs::read_to_string(crate::helpers::repo_path("tests/fixtures/openapi/oas-3.1-schema-2022-10-07.json")).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&meta).unwrap();
    let errors: Vec<String> = validator.iter_errors(&document).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errors.is_empty(), "not an OpenAPI 3.1 document: {errors:#?}");
    for (name, schema) in document["components"]["schemas"].as_object().unwrap() {
        assert!(jsonschema::meta::validate(schema).is_ok(), "components.schemas.{name} is not a JSON Schema");
    }

    // The bundled submission schema, its references now into the document,
    // takes the fixtures and refuses what the parser refuses.
    let submission = json!({ "$ref": "#/components/schemas/ReferralSubmission", "components": document["components"] });
    let bundled = jsonschema::draft202012::new(&submission).unwrap();
    for name in crate::helpers::FIXTURES {
        let referral = fixture(name);
        assert!(bundled.is_valid(&referral), "{name}: {:?}", bundled.iter_errors(&referral).map(|e| e.to_string()).collect::<Vec<_>>());
    }
    let mut bad_key = fixture("returnee_hiv_reintegration");
    bad_key["idempotency_key"] = json!("short");
    let mut bad_category = fixture("returnee_hiv_reintegration");
    bad_category["consent"]["scopes"][0]["categories"] = json!(["no_such_category"]);
    for bad in [bad_key, bad_category] {
        assert!(!bundled.is_valid(&bad));
        assert!(referral_gateway::domain::submission::ReferralSubmission::parse(&bad.to_string(), crate::helpers::fixture_time()).is_err());
    }
}

/// A handful of answers other than success, each checked against the served
/// document: the status is listed for the operation, and the body is a
/// problem+json that conforms to the one Problem schema.
async fn the_statuses_sent_are_documented(backend: Backend) {
    use reqwest::Method;
    let app = spawn_app(backend).await;
    let document = app.get(Who::Nobody, "/v1/openapi.json").await.body;
    let problem = json!({ "$ref": "#/components/schemas/Problem", "components": document["components"] });
    let problem = jsonschema::draft202012::new(&problem).unwrap();
    let unknown = "00000000-0000-4000-8000-000000000000";
    let too_large = json!({ "files": { "a.cedar": "x".repeat(70_000) } });
    // A body: its content type and bytes.
    type Sent = Option<(&'static str, Vec<u8>)>;
    let cases: Vec<(Who, Method, String, &str, Sent, u16, &str)> = vec![
        // No body, or one not declared JSON: 415 (issue 16).
        (Who::Dpo, Method::PUT, "/v1/policies".into(), "/v1/policies", None, 415, "unsupported-media-type"),
        (Who::Dpo, Method::POST, "/v1/policies/simulate".into(), "/v1/policies/simulate", None, 415, "unsupported-media-type"),
        (Who::Dpo, Method::POST, "/v1/policies/simulate".into(), "/v1/policies/simulate", Some(("text/plain", b"{}".to_vec())), 415, "unsupported-media-type"),
        (Who::Recipient, Method::POST, format!("/v1/inbox/{unknown}/status"), "/v1/inbox/{packet_id}/status", None, 415, "unsupported-media-type"),
        (Who::Dpo, Method::PUT, "/v1/policies".into(), "/v1/policies", Some(("application/json", too_large.to_string().into_bytes())), 413, "payload-too-large"),
        // A path parameter that is not UTF-8 once decoded: a problem, not axum's plain text.
        (Who::IomRome, Method::GET, "/v1/referrals/%FF".into(), "/v1/referrals/{id}", None, 400, "invalid-request"),
        (Who::Recipient, Method::POST, "/v1/inbox/%C3%28/ack".into(), "/v1/inbox/{packet_id}/ack", None, 400, "invalid-request"),
        // A cursor is digits, as the API returns it: no sign.
        (Who::Auditor, Method::GET, "/v1/audit?cursor=-1".into(), "/v1/audit", None, 400, "invalid-request"),
        (Who::Auditor, Method::GET, "/v1/audit?cursor=%2B1".into(), "/v1/audit", None, 400, "invalid-request"),
        (Who::Recipient, Method::GET, "/v1/inbox?cursor=%2B1".into(), "/v1/inbox", None, 400, "invalid-request"),
        (Who::Recipient, Method::POST, format!("/v1/inbox/{unknown}/ack"), "/v1/inbox/{packet_id}/ack", None, 404, "not-found"),
        (Who::IomRome, Method::GET, format!("/v1/referrals/{unknown}"), "/v1/referrals/{id}", None, 404, "not-found"),
        (Who::Nobody, Method::GET, "/v1/policies".into(), "/v1/policies", None, 401, "unauthenticated"),
        (Who::IomRome, Method::GET, "/v1/policies".into(), "/v1/policies", None, 403, "forbidden"),
    ];
    for (who, method, url, path, body, status, code) in cases {
        let mut request = app.request(who, method.clone(), &url);
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        let reply = app.send(request).await;
        assert_eq!(reply.status, status, "{method} {url}: {}", reply.text);
        assert_eq!(reply.problem(), code, "{method} {url}: {}", reply.text);
        let operation = &document["paths"][path][method.as_str().to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not an operation");
        assert!(operation["responses"].get(status.to_string()).is_some(), "{method} {path}: {status} is not documented");
        assert_eq!(reply.content_type, "application/problem+json", "{method} {url}");
        assert!(problem.is_valid(&reply.body), "{method} {url}: {}", reply.text);
    }
}
