//! Replies that carry data, over a real two-gateway federation (issue 22
//! §1): Rome's child protection service asks the Nigerian Red Cross to
//! trace a separated child's family; the Red Cross answers with a tracing
//! reply about the mother it found, decided at Nigeria's gateway under the
//! mother's own consent, sealed back to the service that asked, linked to
//! the request (its timeline, its inbox), acknowledged, and withdrawn when
//! the mother withdraws her consent. A reply about a child never says where
//! the child is without the guardian and the best-interests determination.

use std::time::Duration;

use referral_gateway::crypto::jose_keys::{self, DecryptionKey, KeyUse};
use referral_gateway::directory::published_key;
use referral_gateway::domain::OrgId;
use referral_gateway::recipient;
use serde_json::{json, Value};

use crate::helpers::{client_for, policy_files, send, Backend, Reply, Who};
use crate::peers::{default_window, status_of, wait_for, Federation, Peer};

const LIMIT: Duration = Duration::from_secs(40);

crate::on_both_backends!(a_tracing_reply_goes_back_to_who_asked_and_is_withdrawn, a_sealed_assessment_request_is_answered_by_naming_who_asked);

/// The tracing request: a separated Nigerian boy in Rome, his mother last seen in Enugu.
fn tracing_request(key: &str) -> Value {
    json!({
        "idempotency_key": key,
        "purpose": "family_tracing",
        "destination": "nga-red-cross",
        "subject_ref": "ITA-CP-2026-0310",
        "case": {
            "identity": { "given_names": "Chidi", "family_name": "Okafor", "sex": "male", "date_of_birth": "2012-03-04", "nationalities": ["NGA"] },
            "contact": { "address": "Comunità alloggio per minori, Roma" },
            "family": { "members": [{ "relationship": "mother", "given_names": "Grace", "family_name": "Okafor", "last_known_location": { "country": "NGA", "locality": "Enugu" } }] },
            "protection": { "profiles": ["separated_child"] },
            "child_safeguards": { "guardian": { "role": "appointed_guardian", "organisation": "Tutore volontario, Roma" } }
        },
        "consent": {
            "given_by": { "type": "guardian", "role": "appointed_guardian", "organisation": "Tutore volontario, Roma" },
            "method": "written",
            "given_at": "2026-11-10T10:00:00Z",
            "scopes": [{
                "purposes": ["family_tracing"],
                "categories": ["identity", "family", "child_safeguards"],
                "recipients": [{ "kind": "red_cross_red_crescent", "country": "NGA" }],
                "valid_until": "2027-11-10T00:00:00Z"
            }]
        }
    })
}

/// The Red Cross's tracing reply about the mother, under her own consent to tell the service that asked.
fn reply_about_the_mother(key: &str, purpose: &str) -> Value {
    json!({
        "idempotency_key": key,
        "purpose": purpose,
        "subject_ref": "NGA-RC-2026-0042",
        "case": {
            "identity": { "given_names": "Grace", "family_name": "Okafor", "sex": "female", "nationalities": ["NGA"] },
            "contact": { "phone": "+234 803 555 0142", "current_location": { "country": "NGA", "locality": "Enugu" } },
            "health": { "conditions": ["diabetes"] },
            "tracing_wishes": { "contact_with_family": "yes", "whereabouts_shared": "yes", "reunification": "yes" }
        },
        "consent": {
            "given_by": { "type": "subject" },
            "method": "verbal",
            "given_at": "2026-11-20T09:00:00Z",
            "scopes": [{
                "purposes": ["tracing_reply"],
                "categories": ["identity", "contact", "tracing_wishes"],
                "recipients": [{ "organisation": "ita-child-protection" }],
                "valid_until": "2027-11-20T00:00:00Z"
            }]
        }
    })
}

/// A reply about the boy's sister, fifteen, found with an aunt: her guardian consents; no
/// best-interests determination says she should rejoin the family that searches.
fn reply_about_a_child(key: &str) -> Value {
    json!({
        "idempotency_key": key,
        "purpose": "tracing_reply",
        "subject_ref": "NGA-RC-2026-0043",
        "case": {
            "identity": { "given_names": "Ada", "family_name": "Okafor", "sex": "female", "date_of_birth": "2011-06-01" },
            "contact": { "address": "QjAuntsHouseEnugu" },
            "child_safeguards": { "guardian": { "role": "parent", "given_names": "Ngozi" } },
            "tracing_wishes": { "contact_with_family": "yes" }
        },
        "consent": {
            "given_by": { "type": "guardian", "role": "parent" },
            "method": "written",
            "given_at": "2026-11-20T09:00:00Z",
            "scopes": [{
                "purposes": ["tracing_reply"],
                "categories": ["identity", "contact", "child_safeguards", "tracing_wishes"],
                "recipients": [{ "organisation": "ita-child-protection" }],
                "valid_until": "2027-11-20T00:00:00Z"
            }]
        }
    })
}

async fn reply(nga: &Peer, who: Who, packet_id: &str, body: &Value) -> Reply {
    send(client_for(who).post(nga.url(&format!("/v1/inbox/{packet_id}/replies"))).json(body)).await
}

/// The packet ids in a recipient's inbox.
async fn listed(peer: &Peer, who: Who) -> Vec<Value> {
    peer.get(who, "/v1/inbox").await.body["items"].as_array().cloned().unwrap_or_default()
}

/// The timeline entries of `status` of a referral, as reason codes.
async fn entries(peer: &Peer, who: Who, referral_id: &str, status: &str) -> Vec<Vec<String>> {
    let view = peer.get(who, &format!("/v1/referrals/{referral_id}")).await.body;
    view["timeline"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter(|step| step["status"] == status)
                .map(|step| step["reason_codes"].as_array().map(|c| c.iter().map(|c| c.as_str().unwrap().to_owned()).collect()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

async fn a_tracing_reply_goes_back_to_who_asked_and_is_withdrawn(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));

    // Rome asks; the Red Cross in Nigeria gets the request, naming who asked.
    let asked = ita.submit(Who::ItaChildProtection, &tracing_request("tracing-0001")).await;
    assert_eq!(asked.status, 202, "{}", asked.text);
    let request_id = asked.body["referral_id"].as_str().unwrap().to_owned();
    wait_for("the request in the Red Cross's inbox", LIMIT, || async { !listed(nga, Who::NgaRedCross).await.is_empty() }).await;
    let packet_id = listed(nga, Who::NgaRedCross).await[0]["packet_id"].as_str().unwrap().to_owned();
    let request = nga.get(Who::NgaRedCross, &format!("/v1/inbox/{packet_id}")).await;
    assert_eq!(request.status, 200, "{}", request.text);
    assert_eq!(request.body["purpose"], "family_tracing");
    assert_eq!(request.body["requested_by"], "ita-child-protection");
    // The child's whereabouts are not in a tracing request.
    assert!(request.body["case"].get("contact").is_none(), "{}", request.text);

    // A reply must answer the kind of request it is for, and only the case's own organisation answers it.
    let mismatched = reply(nga, Who::NgaRedCross, &packet_id, &reply_about_the_mother("reply-0000", "family_assessment")).await;
    assert_eq!(mismatched.status, 422, "{}", mismatched.text);
    assert!(mismatched.body["type"].as_str().unwrap().ends_with("/reply-not-possible"), "{}", mismatched.text);
    assert_eq!(mismatched.body["reason_code"], "reply_purpose_mismatch");
    let stranger = reply(nga, Who::NgaShelter, &packet_id, &reply_about_the_mother("reply-0000", "tracing_reply")).await;
    assert_eq!(stranger.status, 404, "{}", stranger.text);
    // A mother who consented to tell another organisation is not located for this one: denied, nothing goes.
    let mut unconsented = reply_about_the_mother("reply-0009", "tracing_reply");
    unconsented["consent"]["scopes"][0]["recipients"] = json!([{ "organisation": "ita-iom-rome" }]);
    let denied = reply(nga, Who::NgaRedCross, &packet_id, &unconsented).await;
    assert_eq!(denied.status, 422, "{}", denied.text);
    assert!(denied.body["type"].as_str().unwrap().ends_with("/referral-denied"), "{}", denied.text);

    // The reply about the mother: decided at Nigeria's gateway, cut to the tracing reply's baseline.
    let answered = reply(nga, Who::NgaRedCross, &packet_id, &reply_about_the_mother("reply-0001", "tracing_reply")).await;
    assert_eq!(answered.status, 202, "{}", answered.text);
    let reply_id = answered.body["referral_id"].as_str().unwrap().to_owned();
    let sent: std::collections::BTreeSet<&str> = answered.body["decision"]["sent"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(sent, ["contact", "identity", "tracing_wishes"].into(), "{}", answered.text);
    // A retry is answered as the first time.
    let again = reply(nga, Who::NgaRedCross, &packet_id, &reply_about_the_mother("reply-0001", "tracing_reply")).await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.body["referral_id"], reply_id.as_str());
    // The Red Cross follows its reply as any sender does.
    let own = nga.get(Who::NgaRedCross, &format!("/v1/referrals/{reply_id}")).await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(own.body["answers"], packet_id.as_str());
    assert_eq!(own.body["recipient"]["org"], "ita-child-protection");

    // In Rome: linked to the request, in the timeline and the inbox of the service that asked.
    wait_for("reply_received", LIMIT, || async { !entries(ita, Who::ItaChildProtection, &request_id, "reply_received").await.is_empty() }).await;
    let received = entries(ita, Who::ItaChildProtection, &request_id, "reply_received").await;
    assert_eq!(received, [vec!["tracing_reply".to_owned()]], "{received:?}");
    let inbox = listed(ita, Who::ItaChildProtectionInbox).await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let reply_packet = inbox[0]["packet_id"].as_str().unwrap().to_owned();
    assert_eq!(inbox[0]["answers_referral"], request_id.as_str());
    assert_eq!(inbox[0]["purpose"], "tracing_reply");
    let case = ita.get(Who::ItaChildProtectionInbox, &format!("/v1/inbox/{reply_packet}")).await;
    assert_eq!(case.status, 200, "{}", case.text);
    assert_eq!(case.body["case"]["contact"]["phone"], "+234 803 555 0142");
    assert_eq!(case.body["case"]["tracing_wishes"]["reunification"], "yes");
    assert!(case.body["case"].get("health").is_none(), "not in a tracing reply: {}", case.text);
    assert_eq!(case.body["answers_referral"], request_id.as_str());
    // Nobody else in Rome sees it.
    assert!(listed(ita, Who::Recipient).await.is_empty());

    // Rome takes it; Nigeria's Red Cross sees it taken.
    let acknowledged = send(client_for(Who::ItaChildProtectionInbox).post(ita.url(&format!("/v1/inbox/{reply_packet}/ack")))).await;
    assert_eq!(acknowledged.status, 200, "{}", acknowledged.text);
    wait_for("forwarded", LIMIT, || async { status_of(nga, Who::NgaRedCross, &reply_id).await == "forwarded" }).await;

    // About a child: her guardian consents, no determination allows it: where she is stays in Nigeria.
    let child = reply(nga, Who::NgaRedCross, &packet_id, &reply_about_a_child("reply-0002")).await;
    assert_eq!(child.status, 202, "{}", child.text);
    let withheld = child.body["decision"]["withheld"].to_string();
    assert!(withheld.contains("child_whereabouts_to_family"), "{}", child.text);
    let sent: std::collections::BTreeSet<&str> = child.body["decision"]["sent"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(sent, ["identity", "tracing_wishes"].into(), "{}", child.text);
    wait_for("the second reply", LIMIT, || async { listed(ita, Who::ItaChildProtectionInbox).await.len() == 2 }).await;
    let second = listed(ita, Who::ItaChildProtectionInbox).await.into_iter().find(|item| item["packet_id"] != reply_packet.as_str()).unwrap();
    let text = ita.get(Who::ItaChildProtectionInbox, &format!("/v1/inbox/{}", second["packet_id"].as_str().unwrap())).await.text;
    assert!(!text.contains("QjAuntsHouseEnugu") && !text.contains("Ngozi"), "{text}");

    // The service's inbox certificate (recipient role alone) follows the replies it sent, never the service's referrals.
    let inbox_reads_request = ita.get(Who::ItaChildProtectionInbox, &format!("/v1/referrals/{request_id}")).await;
    assert_eq!(inbox_reads_request.status, 404, "{}", inbox_reads_request.text);
    let inbox_lists = ita.get(Who::ItaChildProtectionInbox, "/v1/referrals").await;
    assert_eq!((inbox_lists.status, inbox_lists.body["items"].clone()), (200, json!([])), "{}", inbox_lists.text);
    let inbox_withdraws = send(client_for(Who::ItaChildProtectionInbox).post(ita.url(&format!("/v1/referrals/{request_id}/consent-withdrawal"))).json(&json!({}))).await;
    assert_eq!(inbox_withdraws.status, 404, "{}", inbox_withdraws.text);
    let subject_wide = send(client_for(Who::ItaChildProtectionInbox).post(ita.url("/v1/subjects/ITA-CP-2026-0310/consent-withdrawal")).json(&json!({}))).await;
    assert_eq!((subject_wide.status, subject_wide.body["referrals"].clone()), (200, json!([])), "{}", subject_wide.text);
    assert_eq!(status_of(ita, Who::ItaChildProtection, &request_id).await, "delivered");
    // The Red Cross lists its reply among what it sent.
    let replies_sent = nga.get(Who::NgaRedCross, "/v1/referrals").await;
    // The denied one, the mother's and the sister's.
    assert_eq!(replies_sent.body["items"].as_array().map(Vec::len), Some(3), "{}", replies_sent.text);

    // The same idempotency key for another request is another reply: refused, not answered as the first.
    let second = ita.submit(Who::ItaChildProtection, &tracing_request("tracing-0002")).await;
    assert_eq!(second.status, 202, "{}", second.text);
    wait_for("the second request", LIMIT, || async { listed(nga, Who::NgaRedCross).await.len() == 2 }).await;
    let other_packet = listed(nga, Who::NgaRedCross).await.into_iter().find(|i| i["packet_id"] != packet_id.as_str()).unwrap()["packet_id"].as_str().unwrap().to_owned();
    let reused = reply(nga, Who::NgaRedCross, &other_packet, &reply_about_the_mother("reply-0001", "tracing_reply")).await;
    assert_eq!(reused.status, 409, "{}", reused.text);

    // The mother withdraws her consent: the reply is erased in Rome, confirmed back.
    let withdrawn = send(client_for(Who::NgaRedCross).post(nga.url(&format!("/v1/referrals/{reply_id}/consent-withdrawal"))).json(&json!({}))).await;
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.text);
    // Listed as erased (its key goes first, so reading it answers 410 a moment before): then it may be confirmed.
    wait_for("the reply erased in Rome", LIMIT, || async {
        listed(ita, Who::ItaChildProtectionInbox).await.iter().any(|item| item["packet_id"] == reply_packet.as_str() && item["state"] == "erased")
    })
    .await;
    assert_eq!(ita.get(Who::ItaChildProtectionInbox, &format!("/v1/inbox/{reply_packet}")).await.status, 410);
    let confirmed = send(client_for(Who::ItaChildProtectionInbox).post(ita.url(&format!("/v1/inbox/{reply_packet}/erasure-confirmed")))).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);
    wait_for("erasure_confirmed", LIMIT, || async { status_of(nga, Who::NgaRedCross, &reply_id).await == "erasure_confirmed" }).await;
    // The request itself stands: a reply's withdrawal is the mother's, not the child's.
    assert_eq!(status_of(ita, Who::ItaChildProtection, &request_id).await, "delivered");
    // Nothing of the mother in the replying gateway's audit but codes and ids.
    let audit = send(client_for(Who::NgaDpo).get(nga.url("/v1/audit")).query(&[("limit", "1000")])).await.text;
    assert!(audit.contains(&format!("answers:{packet_id}")), "the reply is linked to its request in the audit");
    assert!(!audit.contains("Grace") && !audit.contains("803 555"), "{audit}");
}

/// A family-assessment request about an asylum-seeking Nigerian boy, to the
/// Nigerian Red Cross: sealed end to end to it (the built-in rule for an
/// asylum-linked case going to an origin state), so Nigeria's gateway cannot
/// read who asked; the Red Cross's own tool can.
fn assessment_request(key: &str) -> Value {
    let mut request = tracing_request(key);
    request["purpose"] = json!("family_assessment_request");
    request["case"]["asylum"] = json!({ "status": ["asylum_seeker"] });
    request["consent"]["scopes"][0]["purposes"] = json!(["family_assessment_request"]);
    request
}

/// The Red Cross's assessment of the boy's mother and her household, under her consent.
fn assessment_of_the_mother(key: &str, to: Option<&str>) -> Value {
    let mut reply = json!({
        "idempotency_key": key,
        "purpose": "family_assessment",
        "subject_ref": "NGA-RC-2026-0044",
        "case": {
            "identity": { "given_names": "Grace", "family_name": "Okafor", "sex": "female" },
            "family_assessment": {
                "assessed_on": "2026-11-21",
                "household": [{ "relationship": "mother", "year_of_birth": 1985, "caregiver": true }, { "relationship": "grandparent", "year_of_birth": 1950 }],
                "capacity_to_care": "adequate_with_support",
                "risks": ["economic_hardship"],
                "recommendation": "reunification_with_support"
            }
        },
        "consent": {
            "given_by": { "type": "subject" },
            "method": "written",
            "given_at": "2026-11-21T09:00:00Z",
            "scopes": [{
                "purposes": ["family_assessment"],
                "categories": ["identity", "family_assessment"],
                "recipients": [{ "organisation": "ita-child-protection" }, { "organisation": "ita-iom-rome" }],
                "valid_until": "2027-11-21T00:00:00Z"
            }]
        }
    });
    if let Some(to) = to {
        reply["to"] = json!(to);
    }
    reply
}

async fn a_sealed_assessment_request_is_answered_by_naming_who_asked(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let jwk = jose_keys::generate(KeyUse::Enc).unwrap();
    let (from, until) = default_window();
    federation.organisation_keys.insert("nga-red-cross".to_owned(), vec![published_key(&jwk, from, until, KeyUse::Enc).unwrap()]);
    federation.publish().await;
    let red_cross_key = DecryptionKey::from_jwk(&jwk).unwrap();
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));

    let asked = ita.submit(Who::ItaChildProtection, &assessment_request("assessment-0001")).await;
    assert_eq!(asked.status, 202, "{}", asked.text);
    assert_eq!(asked.body["decision"]["end_to_end"], "builtin.asylum_end_to_end", "{}", asked.text);
    let request_id = asked.body["referral_id"].as_str().unwrap().to_owned();
    wait_for("the request in the Red Cross's inbox", LIMIT, || async { !listed(nga, Who::NgaRedCross).await.is_empty() }).await;
    let packet_id = listed(nga, Who::NgaRedCross).await[0]["packet_id"].as_str().unwrap().to_owned();
    let document = nga.get(Who::NgaRedCross, &format!("/v1/inbox/{packet_id}")).await.body;
    // Nigeria's gateway cannot tell who asked, nor what: its document holds the envelope only.
    assert!(document.get("requested_by").is_none() && document.get("purpose").is_none(), "{document}");
    let directory = nga.app().gateway().directory();
    let opened = recipient::open_delivered(&document.to_string(), std::slice::from_ref(&red_cross_key), directory.as_ref(), &OrgId::parse("nga-red-cross").unwrap(), federation.clock_now()).unwrap();
    assert_eq!(opened.content.requested_by, Some(OrgId::parse("ita-child-protection").unwrap()));

    // The reply names who asked, or this gateway cannot send it; naming another is refused at Rome's gateway.
    let unnamed = reply(nga, Who::NgaRedCross, &packet_id, &assessment_of_the_mother("assessment-reply-0001", None)).await;
    assert_eq!((unnamed.status, unnamed.body["reason_code"].clone()), (422, json!("sealed_end_to_end")), "{}", unnamed.text);
    let elsewhere = reply(nga, Who::NgaRedCross, &packet_id, &assessment_of_the_mother("assessment-reply-0002", Some("nga-naptip"))).await;
    // (Nigeria's DPOs permit assessments to any organisation: only Rome's gateway stands in the way.)
    let mut files = policy_files();
    files.insert("30-assessments.cedar".to_owned(), "@id(\"assessments.anyone\")\npermit (principal, action == Action::\"family_assessment\", resource);\n".to_owned());
    let stored = send(client_for(Who::NgaDpo).put(nga.url("/v1/policies")).json(&json!({ "files": files }))).await;
    assert_eq!(stored.status, 201, "{}", stored.text);
    let approve = format!("/v1/policies/{}/approve", stored.body["number"]);
    assert_eq!(send(client_for(Who::NgaSecondDpo).post(nga.url(&approve)).json(&json!({}))).await.status, 200);
    assert_eq!((elsewhere.status, elsewhere.body["reason_code"].clone()), (422, json!("not_the_requester")), "{}", elsewhere.text);
    let misdirected = reply(nga, Who::NgaRedCross, &packet_id, &assessment_of_the_mother("assessment-reply-0003", Some("ita-iom-rome"))).await;
    assert_eq!(misdirected.status, 202, "{}", misdirected.text);
    let misdirected_id = misdirected.body["referral_id"].as_str().unwrap().to_owned();
    wait_for("refused at Rome", LIMIT, || async { status_of(nga, Who::NgaRedCross, &misdirected_id).await == "refused" }).await;
    let refusal = entries(nga, Who::NgaRedCross, &misdirected_id, "refused").await;
    assert_eq!(refusal, [vec!["reply_to_other_organisation".to_owned()]], "{refusal:?}");
    assert!(listed(ita, Who::Recipient).await.is_empty() && ita.get(Who::IomRome, "/v1/inbox").await.status == 403);

    // Named right, the assessment comes back to the service that asked, linked to its request.
    let answered = reply(nga, Who::NgaRedCross, &packet_id, &assessment_of_the_mother("assessment-reply-0004", Some("ita-child-protection"))).await;
    assert_eq!(answered.status, 202, "{}", answered.text);
    wait_for("reply_received", LIMIT, || async { !entries(ita, Who::ItaChildProtection, &request_id, "reply_received").await.is_empty() }).await;
    let inbox = listed(ita, Who::ItaChildProtectionInbox).await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let case = ita.get(Who::ItaChildProtectionInbox, &format!("/v1/inbox/{}", inbox[0]["packet_id"].as_str().unwrap())).await;
    assert_eq!(case.body["case"]["family_assessment"]["recommendation"], "reunification_with_support", "{}", case.text);
    assert_eq!(case.body["answers_referral"], request_id.as_str());
}
