//! Bearer tokens end to end: a real OpenID provider issues the tokens, the
//! gateway discovers it at start and answers over HTTPS.

use serde_json::Value;

use crate::helpers::{fixture_time, spawn_app_with, variant, Backend, TestApp, Who};
use crate::oidc_provider::{expiry_of, OidcProvider, AUDIENCE};

async fn gateway_trusting(provider: &OidcProvider, leeway_seconds: u64) -> TestApp {
    let extra = format!(
        "[auth.oidc]\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\nleeway_seconds = {leeway_seconds}\n",
        provider.issuer()
    );
    spawn_app_with(Backend::Sqlite, fixture_time(), &extra).await
}

async fn with_token(app: &TestApp, request: reqwest::RequestBuilder, token: &str) -> (u16, Value) {
    let reply = app.send(request.bearer_auth(token)).await;
    (reply.status, reply.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_authenticate_and_authorise() {
    let provider = OidcProvider::start().await;
    let app = gateway_trusting(&provider, 30).await;
    // The caller presents no certificate: only the token speaks for it.
    let anonymous = app.client(Who::Nobody);
    let referrals = app.url("/v1/referrals");

    // A valid token of IOM... (the provider's `ita-nrm-system` client acts for ita-nrm, submitter).
    let token = provider.token("ita-nrm-system", AUDIENCE).await;
    let referral = variant("trafficking_victim_reintegration", "bearer-0001", None);
    let (status, body) = with_token(&app, anonymous.post(&referrals).json(&referral), &token).await;
    assert_eq!(status, 202, "{body}");
    let id = body["referral_id"].as_str().unwrap().to_owned();
    let (status, followed) = with_token(&app, anonymous.get(app.url(&format!("/v1/referrals/{id}"))), &token).await;
    assert_eq!((status, followed["status"].as_str()), (200, Some("queued")));

    // ...whose roles do not reach the DPO's endpoints.
    let (status, body) = with_token(&app, anonymous.get(app.url("/v1/policies")), &token).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("missing_role")));
    let dpo = provider.token("ita-dpo-console", AUDIENCE).await;
    let (status, _) = with_token(&app, anonymous.get(app.url("/v1/policies")), &dpo).await;
    assert_eq!(status, 200);

    // Wrong organisation: a Nigerian system's valid token cannot submit to Italy's gateway...
    let foreign = provider.token("nga-naptip-system", AUDIENCE).await;
    let other = variant("trafficking_victim_reintegration", "bearer-0002", None);
    let (status, body) = with_token(&app, anonymous.post(&referrals).json(&other), &foreign).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("org_not_served_here")), "{body}");
    // ...nor read anything here.
    let (status, _) = with_token(&app, anonymous.get(app.url(&format!("/v1/referrals/{id}"))), &foreign).await;
    assert_eq!(status, 403);

    // Wrong audience.
    let elsewhere = provider.token("ita-nrm-system", "urn:referral-gateway:other").await;
    let (status, body) = with_token(&app, anonymous.get(app.url(&format!("/v1/referrals/{id}"))), &elsewhere).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("token_wrong_audience")), "{body}");

    // A tampered token.
    // One character inside the signature (not its last, whose spare bits
    // would make the base64 malformed rather than the signature wrong).
    let at = token.rfind('.').unwrap() + 10;
    let mut tampered = token.clone();
    let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
    tampered.replace_range(at..=at, flipped);
    let (status, body) = with_token(&app, anonymous.get(app.url(&format!("/v1/referrals/{id}"))), &tampered).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("token_bad_signature")), "{body}");

    // Every refusal is audited with its code.
    let dpo_reply = app.send(anonymous.get(app.url("/v1/audit?action=access.refused")).bearer_auth(&dpo)).await;
    let codes: Vec<&str> = dpo_reply.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reasons"][0].as_str())
        .collect();
    assert_eq!(codes, ["missing_role", "org_not_served_here", "org_not_served_here", "token_wrong_audience", "token_bad_signature"]);
    provider.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_and_unknown_keys_are_refused() {
    let provider = OidcProvider::start().await;
    let app = gateway_trusting(&provider, 0).await;
    let anonymous = app.client(Who::Nobody);
    let url = app.url("/v1/referrals/none");

    // The provider's clock starts at the gateway's: the token is valid until
    // the gateway's clock reaches its exp.
    let short = provider.token("short-lived", AUDIENCE).await;
    let (status, body) = with_token(&app, anonymous.get(&url), &short).await;
    assert_eq!(status, 404, "the token was not accepted: {body}");
    app.clock.set(expiry_of(&short));
    let (status, body) = with_token(&app, anonymous.get(&url), &short).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("token_expired")), "{body}");

    // A token from another issuer, signed by a key this gateway never saw.
    let stranger = OidcProvider::start().await;
    let foreign_key = stranger.token("ita-nrm-system", AUDIENCE).await;
    let (status, body) = with_token(&app, anonymous.get(&url), &foreign_key).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("token_unknown_key")), "{body}");
    stranger.stop().await;
    provider.stop().await;
}
