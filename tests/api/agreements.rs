//! Sharing agreements tied to permits over the API (issue 19 §5): a permit's
//! `@agreement`, `@legal_basis`, `@review_by` and `@expires` are checked at
//! upload; once expired, the permit stops applying (`agreement_expired`);
//! permits due for review or expiry are listed and counted in a metric.

use serde_json::{json, Value};

use crate::helpers::{policy_files, spawn_app, variant, Backend, TestApp, Who};
use crate::on_both_backends;

on_both_backends!(an_expired_agreement_stops_its_permit);

/// The shipped health-provider permit, resting on an agreement to review by
/// 1 December 2026 and expiring at the end of 10 December 2026 (the fixtures
/// are dated 23 November 2026).
fn with_agreement(review_by: &str, expires: &str) -> std::collections::BTreeMap<String, String> {
    let mut files = policy_files();
    let permits = files.get_mut("10-permits.cedar").unwrap();
    let annotated = permits.replace(
        "@id(\"reintegration.health_providers\")\n",
        &format!(
            "@id(\"reintegration.health_providers\")\n@agreement(\"ITA-NGA continuity of care MoU\")\n@legal_basis(\"GDPR art. 9(2)(h)\")\n@review_by(\"{review_by}\")\n@expires(\"{expires}\")\n"
        ),
    );
    assert_ne!(&annotated, permits, "the shipped permit moved");
    *permits = annotated;
    files
}

async fn health_decision(app: &TestApp, key: &str) -> Value {
    let reply = app.submit(Who::IomRome, &variant("returnee_hiv_reintegration", key, None)).await;
    assert!([202, 422].contains(&reply.status), "{}", reply.text);
    reply.body["decision"].clone()
}

async fn metric(app: &TestApp, due: &str) -> String {
    let text = app.get(Who::Nobody, "/metrics").await.text;
    let prefix = format!("rgw_policy_agreements_due{{due=\"{due}\"}} ");
    text.lines().find_map(|line| line.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {prefix}in\n{text}")).to_owned()
}

async fn an_expired_agreement_stops_its_permit(backend: Backend) {
    let app = spawn_app(backend).await;

    // Checked at upload: a date that is not YYYY-MM-DD, and a review after the expiry.
    for (review_by, expires, problem) in [("2026-12-01", "10/12/2026", "YYYY-MM-DD"), ("2027-01-01", "2026-12-10", "must not fall after")] {
        let refused = app.put_json(Who::Dpo, "/v1/policies", &json!({ "files": with_agreement(review_by, expires) })).await;
        assert_eq!((refused.status, refused.problem()), (422, "policy-invalid"), "{}", refused.text);
        assert_eq!(refused.body["problems"][0]["file"], "10-permits.cedar");
        assert!(refused.body["problems"][0]["problem"].as_str().unwrap().contains(problem), "{}", refused.text);
    }

    let stored = app.adopt_policy(&json!({ "files": with_agreement("2026-12-01", "2026-12-10") })).await;
    let due = json!([{
        "due": "expires",
        "policy": "reintegration.health_providers",
        "agreement": "ITA-NGA continuity of care MoU",
        "legal_basis": "GDPR art. 9(2)(h)",
        "review_by": "2026-12-01",
        "expires": "2026-12-10",
    }]);
    assert_eq!(stored.body["checks"]["agreements_due"], due, "the draft shows it");
    let listed = app.get(Who::Dpo, "/v1/policies").await.body;
    assert_eq!(listed["agreements_due"], due);
    assert_eq!(metric(&app, "expires").await, "1");
    assert_eq!(metric(&app, "expired").await, "0");

    // Until the end of its last day, the permit sends health to the health provider.
    let before = health_decision(&app, "agreement-0001").await;
    assert_eq!(before["sent"]["health"]["permitted_by"], json!(["reintegration.health_providers"]), "{before}");

    // From the next day on it no longer applies: what only it permitted is withheld, naming it.
    app.clock.advance(chrono::Duration::days(18));
    let after = health_decision(&app, "agreement-0002").await;
    assert!(after["sent"].get("health").is_none(), "{after}");
    assert_eq!(after["withheld"]["health"], json!([{ "reason": "agreement_expired", "policy": "reintegration.health_providers" }]), "{after}");
    let listed = app.get(Who::Dpo, "/v1/policies").await.body;
    assert_eq!(listed["agreements_due"][0]["due"], "expired");
    assert_eq!(metric(&app, "expired").await, "1");
    assert_eq!(metric(&app, "expires").await, "0");
}
