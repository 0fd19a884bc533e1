//! Operating the gateway: liveness, readiness, metrics, and the OpenAPI
//! description matching the routes served.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{fixture, personal_values, spawn_app, subject_refs, variant, Backend, Who};
use crate::on_both_backends;

on_both_backends!(health_readiness_and_metrics);

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

    // Every documented operation is routed: called as the DPO, none is 404 or 405.
    let openapi = referral_gateway::http::openapi_json().unwrap();
    for (method, path) in &documented {
        let operation = &openapi["paths"][path][method.to_lowercase()];
        let url = path.replace("{id}", "00000000-0000-4000-8000-000000000000");
        let mut request = app.request(Who::Dpo, method.parse().unwrap(), &url);
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
