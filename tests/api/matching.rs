//! Matching without disclosure over a real two-gateway federation (issue 22
//! §2). In Rome, the municipal child protection service searches for the
//! mother of a separated Nigerian boy; in Nigeria, the Red Cross's tracing
//! desk registers the mother's search for her son. Nigeria asks Italy; the
//! two searches meet, and each side's officer gets a handle to the other's
//! case, never data. Before that, a search Italy may not show the Red
//! Cross (its consent names another organisation) and a search of another
//! family are found alike: not at all, in answers of the same size.

use std::time::Duration;

use referral_gateway::app::matching::{MatchAnswer, MatchFoundNotice, MatchQuery, MatchTransport};
use referral_gateway::crypto::match_function::Asking;
use referral_gateway::domain::match_index::{people_of, plan_query, QUERY_SLOTS};
use referral_gateway::domain::matching::MatchKey;
use referral_gateway::domain::{CountryCode, OrgId};
use serde_json::{json, Value};

use crate::helpers::{client_for, send, Backend, Reply, Who};
use crate::peers::{Federation, Peer};

crate::on_both_backends!(a_boys_search_and_his_mothers_meet_and_nothing_else_shows);

/// A search for a relative: `subject` looks for `relative`, with the
/// consent to tell `recipients` for family tracing.
fn search(key: &str, destination: &str, subject: Value, relative: Value, recipients: Value) -> Value {
    // A child's consent is given by the guardian.
    let given_by = if subject["date_of_birth"].as_str().is_some_and(|born| born > "2009") {
        json!({ "type": "guardian", "role": "appointed_guardian", "organisation": "Tutore volontario, Roma" })
    } else {
        json!({ "type": "subject" })
    };
    json!({
        "idempotency_key": key,
        "purpose": "family_tracing",
        "destination": destination,
        "subject_ref": format!("REF-{key}"),
        "case": { "identity": subject, "family": { "members": [relative] } },
        "consent": {
            "given_by": given_by,
            "method": "written",
            "given_at": "2026-11-10T10:00:00Z",
            "scopes": [{ "purposes": ["family_tracing"], "categories": ["identity", "family"], "recipients": recipients, "valid_until": "2027-11-10T00:00:00Z" }]
        }
    })
}

/// Rome's search for the boy's mother, sent to `destination`, which the guardian's consent (`recipients`) names.
fn boys_search(key: &str, destination: &str, recipients: Value) -> Value {
    search(
        key,
        destination,
        json!({ "given_names": "Chidi", "family_name": "Okafor", "sex": "male", "date_of_birth": "2012-03-04" }),
        json!({ "relationship": "mother", "given_names": "Grace", "family_name": "Okafor" }),
        recipients,
    )
}

/// The mother's search for her son, registered in Nigeria and sent to the Italian Red Cross.
fn mothers_search(key: &str) -> Value {
    search(
        key,
        "ita-red-cross",
        json!({ "given_names": "Grace", "family_name": "Okafor", "sex": "female", "date_of_birth": "1986-01-20" }),
        json!({ "relationship": "child", "given_names": "Chidi", "family_name": "Okafor", "date_of_birth": "2011-12-01" }),
        json!([{ "kind": "red_cross_red_crescent", "country": "ITA" }]),
    )
}

/// Another family's search in Rome, which the Red Cross in Nigeria may see.
fn another_familys_search(key: &str) -> Value {
    search(
        key,
        "nga-red-cross",
        json!({ "given_names": "Emeka", "family_name": "Nwosu", "sex": "male", "date_of_birth": "2010-05-05" }),
        json!({ "relationship": "father", "given_names": "Obinna", "family_name": "Nwosu" }),
        json!([{ "kind": "red_cross_red_crescent", "country": "NGA" }]),
    )
}

async fn submitted(peer: &Peer, who: Who, body: &Value) -> String {
    let reply = peer.submit(who, body).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.body["referral_id"].as_str().unwrap().to_owned()
}

async fn find_matches(peer: &Peer, who: Who, referral_id: &str, body: &Value) -> Reply {
    send(client_for(who).post(peer.url(&format!("/v1/referrals/{referral_id}/matches"))).json(body)).await
}

/// The reason codes of the `match_found` entries of a referral's timeline.
async fn matches_found(peer: &Peer, who: Who, referral_id: &str) -> Vec<Value> {
    let view = peer.get(who, &format!("/v1/referrals/{referral_id}")).await;
    assert_eq!(view.status, 200, "{}", view.text);
    view.body["timeline"].as_array().unwrap().iter().filter(|step| step["status"] == "match_found").map(|step| step["reason_codes"].clone()).collect()
}

/// Nigeria's query about the mother's search, asked of Italy directly (as
/// Nigeria's gateway would), for the answer itself.
async fn answer_about_the_mother(federation: &Federation) -> MatchAnswer {
    let case: referral_gateway::domain::case::Case = serde_json::from_value(mothers_search("x")["case"].clone()).unwrap();
    let plan = plan_query(&people_of(&case).unwrap());
    let mut keys = plan.keys.clone();
    keys.extend((keys.len()..QUERY_SLOTS).map(|n| MatchKey::filler([u8::try_from(n % 251).unwrap(); 32])));
    let (_, blinded) = Asking::blind(keys).unwrap();
    let query = MatchQuery { asking_org: OrgId::parse("nga-red-cross").unwrap(), blinded: blinded.iter().map(|b| referral_gateway::hex::encode(b)).collect() };
    let client = federation.peer_client("NGA", Duration::from_secs(30));
    let endpoint = federation.peer("ITA").app().gateway().directory().gateway(CountryCode::parse("ITA").unwrap()).unwrap().endpoint.clone();
    client.ask(CountryCode::parse("ITA").unwrap(), &endpoint, &query).await.unwrap()
}

/// An entry as an observer measures it: the length of its handle, of its subject block, of each relative's.
type EntryShape = (usize, usize, Vec<usize>);

/// What an observer of an answer sees: how many entries, and the length of every field.
fn shape(answer: &MatchAnswer) -> (usize, Vec<EntryShape>, usize, usize) {
    let entries = answer
        .entries
        .iter()
        .map(|e| (e.handle.len(), e.subject.iter().map(String::len).sum(), e.sought.iter().map(|b| b.iter().map(String::len).sum()).collect()))
        .collect();
    (answer.entries.len(), entries, answer.evaluated.len(), answer.proof.len())
}

async fn a_boys_search_and_his_mothers_meet_and_nothing_else_shows(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    let mother = submitted(nga, Who::NgaRedCrossDesk, &mothers_search("match-0001")).await;
    let ask_italy = json!({ "gateways": ["ITA"] });

    // Italy holds the boy's search, sent to the Guinean Red Cross (the route he came by), whose guardian
    // consented to it only: not shown to Nigeria's.
    let hidden = submitted(ita, Who::ItaChildProtection, &boys_search("match-0002", "gin-red-cross", json!([{ "organisation": "gin-red-cross" }]))).await;
    let report = find_matches(nga, Who::NgaRedCrossDesk, &mother, &ask_italy).await;
    assert_eq!(report.status, 200, "{}", report.text);
    assert_eq!(report.body["asked"], json!([{ "gateway": "ITA", "outcome": "answered", "matches": [] }]), "{}", report.text);
    // Italy kept a handle for every entry it gave, none standing for a search: as much written as if one were shown.
    assert_eq!(ita.count("SELECT COUNT(*) FROM match_handles").await, 8);
    assert_eq!(ita.count("SELECT COUNT(*) FROM match_handles WHERE referral_id IS NOT NULL").await, 0);
    let not_allowed = answer_about_the_mother(&federation).await;

    // The guardian withdraws; Italy holds another family's search only, which it may show: nothing either.
    let withdrawn = send(client_for(Who::ItaChildProtection).post(ita.url(&format!("/v1/referrals/{hidden}/consent-withdrawal"))).json(&json!({}))).await;
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.text);
    let other = submitted(ita, Who::ItaChildProtection, &another_familys_search("match-0003")).await;
    let report = find_matches(nga, Who::NgaRedCrossDesk, &mother, &ask_italy).await;
    assert_eq!(report.body["asked"][0]["matches"], json!([]), "{}", report.text);
    let not_found = answer_about_the_mother(&federation).await;
    // Observably the same: as many entries, every field as long.
    assert_eq!(shape(&not_allowed), shape(&not_found));
    assert_eq!(not_found.entries.len(), 8);

    // The boy's search, consented for the Red Cross in Nigeria: the two meet, both ways.
    let boy = submitted(ita, Who::ItaChildProtection, &boys_search("match-0004", "nga-red-cross", json!([{ "kind": "red_cross_red_crescent", "country": "NGA" }]))).await;
    let report = find_matches(nga, Who::NgaRedCrossDesk, &mother, &ask_italy).await;
    assert_eq!(report.status, 200, "{}", report.text);
    let found = report.body["asked"][0]["matches"].as_array().unwrap().clone();
    assert_eq!(found.len(), 1, "{}", report.text);
    assert_eq!(found[0]["sought_found"], 5, "Chidi Okafor: two parts, two sounds, the whole name");
    assert_eq!(found[0]["subject_sought"], 5, "Grace Okafor, born a year the boy's search does not know");
    let handle = found[0]["handle"].as_str().unwrap();
    // Nigeria told Italy at once, which used the handle up.
    assert_eq!(ita.count(&format!("SELECT COUNT(*) FROM match_handles WHERE handle = '{handle}' AND referral_id IS NULL")).await, 1);
    // Each officer gets a handle to the other's case on the search's timeline: codes only.
    assert_eq!(matches_found(nga, Who::NgaRedCrossDesk, &mother).await, [json!(["matched_at:ITA", format!("handle:{handle}")])]);
    assert_eq!(
        matches_found(ita, Who::ItaChildProtection, &boy).await,
        [json!(["matched_by:NGA", "asking_org:nga-red-cross", format!("asking_referral:{mother}")])]
    );
    assert!(matches_found(ita, Who::ItaChildProtection, &other).await.is_empty());
    assert!(matches_found(ita, Who::ItaChildProtection, &hidden).await.is_empty());
    assert!(!report.text.contains("Okafor") && !report.text.contains("Chidi"), "{}", report.text);

    // What Nigeria tells Italy is checked: a handle records one match, once; a handle of an entry not
    // shown, or a notice without the evidence only the agreeing keys give, records nothing.
    let client = federation.peer_client("NGA", Duration::from_secs(30));
    let italy = CountryCode::parse("ITA").unwrap();
    let endpoint = ita.app().gateway().directory().gateway(italy).unwrap().endpoint.clone();
    let notice = |handle: &str, evidence: Vec<String>| MatchFoundNotice {
        handle: handle.to_owned(),
        asking_org: OrgId::parse("nga-red-cross").unwrap(),
        asking_referral: mother.clone(),
        evidence,
    };
    client.tell_found(italy, &endpoint, &notice(handle, vec![])).await.unwrap();
    for entry in &not_allowed.entries {
        client.tell_found(italy, &endpoint, &notice(&entry.handle, entry.subject.clone())).await.unwrap();
    }
    let fresh = answer_about_the_mother(&federation).await;
    for entry in &fresh.entries {
        client.tell_found(italy, &endpoint, &notice(&entry.handle, entry.subject.iter().chain(entry.sought.iter().flatten()).cloned().collect())).await.unwrap();
    }
    assert_eq!(matches_found(ita, Who::ItaChildProtection, &boy).await.len(), 1, "still the one match");
    assert_eq!(ita.count("SELECT COUNT(*) FROM audit_log WHERE action = 'match.found' AND outcome = 'recorded'").await, 1);

    // An asylum-linked search never asks a gateway of the state the person fled.
    let fled = boys_search("match-0006", "gin-red-cross", json!([{ "organisation": "gin-red-cross" }]));
    let mut fled = fled;
    fled["case"]["asylum"] = json!({ "status": ["asylum_seeker"], "feared_return": ["NGA"] });
    let fled = submitted(ita, Who::ItaChildProtection, &fled).await;
    let report = find_matches(ita, Who::ItaChildProtection, &fled, &json!({ "gateways": ["NGA"] })).await;
    assert_eq!(report.status, 200, "{}", report.text);
    assert_eq!(report.body["asked"], json!([{ "gateway": "NGA", "outcome": "not-asked-origin-state", "matches": [] }]), "{}", report.text);
    assert_eq!(nga.count("SELECT COUNT(*) FROM match_queries").await, 0, "Nigeria was never asked anything");

    // Only a search can be matched, only by its own organisation, and only against other members.
    let not_mine = find_matches(nga, Who::Foreign, &mother, &ask_italy).await;
    assert_eq!(not_mine.status, 404, "{}", not_mine.text);
    let itself = find_matches(nga, Who::NgaRedCrossDesk, &mother, &json!({ "gateways": ["NGA"] })).await;
    assert_eq!(itself.status, 422, "{}", itself.text);
    assert!(itself.body["type"].as_str().unwrap().ends_with("/match-gateway-unknown"), "{}", itself.text);
    let nobody = find_matches(nga, Who::NgaRedCrossDesk, &mother, &json!({ "gateways": [] })).await;
    assert_eq!(nobody.status, 422, "{}", nobody.text);
    let return_case = json!({
        "idempotency_key": "match-0005", "purpose": "return", "destination": "ita-iom-rome", "subject_ref": "REF-match-0005",
        "case": { "identity": { "given_names": "Ada", "family_name": "Eze" } },
        "consent": { "given_by": { "type": "subject" }, "method": "written", "given_at": "2026-11-10T10:00:00Z",
            "scopes": [{ "purposes": ["return"], "categories": ["identity"], "recipients": [{ "country": "ITA" }], "valid_until": "2027-11-10T00:00:00Z" }] }
    });
    let returning = submitted(nga, Who::NgaRedCrossDesk, &return_case).await;
    let refused = find_matches(nga, Who::NgaRedCrossDesk, &returning, &ask_italy).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.body["type"].as_str().unwrap().ends_with("/match-not-possible"), "{}", refused.text);
}

crate::on_both_backends!(a_gateway_answers_each_peer_its_limit_of_queries_a_day);

async fn a_gateway_answers_each_peer_its_limit_of_queries_a_day(backend: Backend) {
    let mut federation = Federation::prepare(backend, &["ITA", "NGA"]);
    federation.peer_mut("ITA").config.matching.queries_per_day = 2;
    federation.launch(&["ITA", "NGA"]).await;
    let nga = federation.peer("NGA");
    let mother = submitted(nga, Who::NgaRedCrossDesk, &mothers_search("limit-0001")).await;
    let ask_italy = json!({ "gateways": ["ITA"] });
    for _ in 0..2 {
        let report = find_matches(nga, Who::NgaRedCrossDesk, &mother, &ask_italy).await;
        assert_eq!(report.body["asked"][0]["outcome"], "answered", "{}", report.text);
    }
    // The third within the day: Italy refuses it (and counts it nowhere), the report says why.
    let report = find_matches(nga, Who::NgaRedCrossDesk, &mother, &ask_italy).await;
    assert_eq!(report.status, 200, "{}", report.text);
    assert_eq!(report.body["asked"], json!([{ "gateway": "ITA", "outcome": "match-rate-limited", "matches": [] }]), "{}", report.text);
    // A day later Italy answers again.
    federation.clock.advance(chrono::Duration::hours(24));
    let report = find_matches(nga, Who::NgaRedCrossDesk, &mother, &ask_italy).await;
    assert_eq!(report.body["asked"][0]["outcome"], "answered", "{}", report.text);

    // The client matching asks through is held by the gateway: it must not keep the gateway (and its
    // database connections) alive once stopped.
    let gateway = std::sync::Arc::downgrade(federation.peer("NGA").app().gateway());
    federation.stop_peer("NGA").await;
    // Tasks the store ran may finish a moment after the stop.
    crate::helpers::wait_for("the stopped gateway dropped", Duration::from_secs(10), || async { gateway.upgrade().is_none() }).await;
}
