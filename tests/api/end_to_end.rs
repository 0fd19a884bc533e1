//! End-to-end sealing over a real two-gateway federation, Nigeria's gateway
//! playing a state-run gateway of the person's state of origin. An
//! asylum-linked case goes from Italy to a non-state recipient in Nigeria
//! only sealed to the recipient's own key; Nigeria's gateway routes it, and
//! everything its operators can read (the packet opened with the gateway's
//! own keys, its database, its audit log, its logs) holds nothing of the
//! case and nothing that tells it from an ordinary case.

use std::time::Duration;

use referral_gateway::crypto::end_to_end::{self, ROUTING_FIELDS};
use referral_gateway::crypto::jose_keys::{self, DecryptionKey, KeyUse};
use referral_gateway::crypto::packet::{self, PacketClaims, Receiver};
use referral_gateway::crypto::federation_keys;
use referral_gateway::directory::published_key;
use referral_gateway::domain::{CountryCode, OrgId};
use serde_json::{json, Value};

use crate::helpers::{Captured, personal_values, subject_refs, variant, Backend, Who};
use crate::peers::{default_window, status_of, wait_for, Federation, Peer};

const LIMIT: Duration = Duration::from_secs(40);
const RECIPIENT: &str = "nga-health-lagos";

/// The returnee of the fixture, as an ordinary case and as one whose
/// asylum claim was rejected in Italy: asylum-linked, with Nigeria its origin.
fn returnee(key: &str, asylum_linked: bool) -> Value {
    let mut referral = variant("returnee_hiv_reintegration", key, None);
    referral["subject_ref"] = json!(format!("ITA-2026-{key}"));
    if asylum_linked {
        referral["case"]["asylum"] = json!({ "status": ["rejected_asylum_seeker"] });
    }
    referral
}

/// The health provider's key pair, published in the directory.
async fn publish_recipient_key(federation: &mut Federation) -> DecryptionKey {
    let jwk = jose_keys::generate(KeyUse::Enc).unwrap();
    let (from, until) = default_window();
    let entry = published_key(&jwk, from, until, KeyUse::Enc).unwrap();
    federation.organisation_keys.insert(RECIPIENT.to_owned(), vec![entry]);
    federation.publish().await;
    DecryptionKey::from_jwk(&jwk).unwrap()
}

/// Submits and waits for delivery; returns the referral id and its packet id.
async fn delivered(federation: &Federation, referral: &Value) -> (String, String) {
    let ita = federation.peer("ITA");
    let reply = ita.submit(Who::IomRome, referral).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["referral_id"].as_str().unwrap().to_owned();
    wait_for("the delivery", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
    let packet_id = ita.text(&format!("SELECT packet_id FROM outbox WHERE id = '{id}'")).await.unwrap();
    (id, packet_id)
}

/// All the routing gateway can ever read of a packet it received: the
/// packet as sent, opened with its own keys.
fn as_the_routing_gateway_reads_it(federation: &Federation, sealed: &str) -> PacketClaims {
    let nga = federation.peer("NGA");
    let keys = federation_keys::load(nga.keys_dir()).unwrap();
    let receiver = Receiver {
        country: CountryCode::parse("NGA").unwrap(),
        keys: &keys.decryption,
        now: federation.clock_now(),
        max_skew: chrono::Duration::minutes(5),
        max_bytes: 1024 * 1024,
        max_lifetime: chrono::Duration::days(30),
    };
    packet::open(sealed.as_bytes(), &receiver, nga.app().gateway().directory().as_ref(), None).unwrap()
}

/// Every text a table holds, row by row (columns joined).
async fn rows(peer: &Peer, table: &str, columns: &str) -> Vec<String> {
    let count = peer.count(&format!("SELECT COUNT(*) FROM {table}")).await;
    let mut out = Vec::new();
    for offset in 0..count {
        let sql = format!("SELECT {columns} FROM {table} ORDER BY 1 LIMIT 1 OFFSET {offset}");
        out.push(peer.text(&sql).await.unwrap_or_default());
    }
    out
}

/// Words that would tell what a case is about.
fn telling_words() -> Vec<&'static str> {
    vec![
        "reintegration", "family_tracing", "asylum", "rejected_asylum_seeker", "refugee", "identity", "contact", "documents",
        "case_notes", "stranded_migrant", "medical_needs", "non_negotiable", "firewall", "protection", "antiretroviral", "Onitsha",
    ]
}

/// One thread, so that both gateways log to the subscriber the test sets.
mod an_asylum_linked_case_crosses_a_state_run_gateway_that_cannot_read_it_or_tell_it_apart {
    #[tokio::test(flavor = "current_thread")]
    async fn sqlite() {
        super::an_asylum_linked_case_crosses_a_state_run_gateway_that_cannot_read_it_or_tell_it_apart(crate::helpers::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "current_thread")]
    async fn postgres() {
        super::an_asylum_linked_case_crosses_a_state_run_gateway_that_cannot_read_it_or_tell_it_apart(crate::helpers::Backend::Postgres).await;
    }
}

async fn an_asylum_linked_case_crosses_a_state_run_gateway_that_cannot_read_it_or_tell_it_apart(backend: Backend) {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_env_filter("referral_gateway=trace,info").with_ansi(false).finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;

    // Without a key of its own, the recipient gets no asylum-linked case: the sender denies it.
    let refused = federation.peer("ITA").submit(Who::IomRome, &returnee("e2e-0001", true)).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.body["reason_codes"].as_array().unwrap().contains(&json!("recipient_key_required")), "{}", refused.text);
    assert_eq!(federation.peer("ITA").count("SELECT COUNT(*) FROM outbox").await, 0);

    // With one, an asylum-linked case and an ordinary one both go, sealed to it.
    let recipient_key = publish_recipient_key(&mut federation).await;
    let (asylum_id, asylum_packet) = delivered(&federation, &returnee("e2e-0002", true)).await;
    let (ordinary_id, ordinary_packet) = delivered(&federation, &returnee("e2e-0003", false)).await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    for id in [&asylum_id, &ordinary_id] {
        let decision = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
        assert_eq!(ita.count(&format!("SELECT COUNT(*) FROM outbox WHERE id = '{id}' AND end_to_end")).await, 1, "{decision}");
    }

    // Packets of one bucket have one size.
    let sent = |id: String| async move { ita.text(&format!("SELECT packet FROM outbox WHERE id = '{id}'")).await.unwrap() };
    let (asylum_sealed, ordinary_sealed) = (sent(asylum_id.clone()).await, sent(ordinary_id.clone()).await);
    assert_eq!(asylum_sealed.len(), ordinary_sealed.len());

    // What the routing gateway can decrypt: routing facts only.
    let mut secrets: Vec<String> = personal_values().into_iter().chain(subject_refs()).collect();
    secrets.extend(["ITA-2026-e2e-0002".to_owned(), "ITA-2026-e2e-0003".to_owned()]);
    for sealed in [&asylum_sealed, &ordinary_sealed] {
        let outer = as_the_routing_gateway_reads_it(&federation, sealed);
        let readable = serde_json::to_value(&outer).unwrap();
        for name in readable.as_object().unwrap().keys() {
            assert!(ROUTING_FIELDS.contains(&name.as_str()), "the routing gateway reads {name}");
        }
        let text = readable.to_string();
        for word in telling_words().iter().map(|w| w.to_string()).chain(secrets.iter().cloned()) {
            assert!(!text.contains(&word), "the routing gateway reads a telling value");
        }
    }

    // The recipient reads both, whole, with its own key; its gateway handed over only routing facts besides.
    wait_for("both cases listed", LIMIT, || async {
        nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"].as_array().is_some_and(|items| items.len() == 2)
    })
    .await;
    let listed = nga.get(Who::NgaHealth, "/v1/inbox").await.body;
    for item in listed["items"].as_array().unwrap() {
        assert_eq!(item["end_to_end"], true, "{listed}");
        assert!(item.get("purpose").is_none(), "{listed}");
    }
    let organisation = OrgId::parse(RECIPIENT).unwrap();
    for (packet_id, asylum_linked) in [(&asylum_packet, true), (&ordinary_packet, false)] {
        let case = nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await;
        assert_eq!(case.status, 200, "{}", case.text);
        assert!(case.body.get("case").is_none() && case.body.get("purpose").is_none(), "{}", case.text);
        let inner = end_to_end::open_as_organisation(
            case.body["end_to_end"].as_str().unwrap(),
            std::slice::from_ref(&recipient_key),
            nga.app().gateway().directory().as_ref(),
            &organisation,
        )
        .unwrap();
        assert!(end_to_end::belongs_to(&inner, packet_id, CountryCode::parse("ITA").unwrap()));
        assert_eq!(inner.body["identity"]["family_name"], "Okonkwo");
        assert_eq!(inner.purpose.map(|p| p.as_str()), Some("reintegration"));
        assert!(inner.retention_until.is_some() && inner.consent_expires_at.is_some());
        // The asylum category never goes to the origin state, sealed or not.
        assert!(inner.body.get("asylum").is_none(), "asylum-linked: {asylum_linked}");
    }

    // The recipient takes both; the same codes flow back for each.
    for packet_id in [&asylum_packet, &ordinary_packet] {
        let acknowledged = crate::helpers::send(crate::helpers::client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/ack")))).await;
        assert_eq!(acknowledged.status, 200, "{}", acknowledged.text);
    }
    for id in [&asylum_id, &ordinary_id] {
        wait_for("the acknowledgement back at the sender", LIMIT, || async { status_of(ita, Who::IomRome, id).await == "forwarded" }).await;
    }

    // What the routing gateway holds: its rows, its audit, its replies are
    // the same for both cases, and tell nothing of either.
    let inbox_row = |packet_id: String| async move {
        nga.text(&format!("SELECT state || '|' || COALESCE(reasons, '') || '|' || packet_type || '|' || recipient_org FROM inbox WHERE packet_id = '{packet_id}'"))
            .await
            .unwrap()
    };
    assert_eq!(inbox_row(asylum_packet.clone()).await, inbox_row(ordinary_packet.clone()).await);
    let audit_of = |packet_id: String| async move {
        rows(nga, &format!("(SELECT seq, action, outcome, COALESCE(reasons, '') AS reasons FROM audit_log WHERE referral_id = '{packet_id}') AS a"), "action || '|' || outcome || '|' || reasons")
            .await
    };
    let (asylum_audit, ordinary_audit) = (audit_of(asylum_packet.clone()).await, audit_of(ordinary_packet.clone()).await);
    assert!(!asylum_audit.is_empty());
    assert_eq!(asylum_audit, ordinary_audit);
    let replies = rows(nga, "outbox", "packet_type || '|' || state || '|' || recipient_org").await;
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies.first(), replies.last());

    let mut held = Vec::new();
    for (table, columns) in [
        ("inbox", "packet_id || '|' || issuer || '|' || packet_type || '|' || recipient_org || '|' || state || '|' || COALESCE(reasons, '') || '|' || COALESCE(narrowed, '')"),
        ("audit_log", "action || '|' || outcome || '|' || COALESCE(reasons, '') || '|' || COALESCE(policy_version, '') || '|' || actor_subject"),
        ("outbox", "packet_type || '|' || recipient_org || '|' || COALESCE(purpose, '') || '|' || COALESCE(policy_version, '')"),
        ("withdrawn_packets", "packet_id"),
        ("narrowed_packets", "categories"),
    ] {
        held.extend(rows(nga, table, columns).await);
    }
    let held = held.join("\n");
    assert!(held.contains(&asylum_packet) && held.contains("acknowledged"), "the dump must see the case's rows");
    for word in telling_words().iter().map(|w| w.to_string()).chain(secrets.iter().cloned()) {
        assert!(!held.contains(&word), "the routing gateway's database tells: {word}");
    }

    // Nor its metrics.
    let metrics = crate::helpers::send(crate::helpers::client_for(Who::Nobody).get(nga.url("/metrics"))).await.text;
    assert!(metrics.contains("rgw_http_requests"), "{metrics}");
    for word in telling_words().iter().map(|w| w.to_string()).chain(secrets.iter().cloned()) {
        assert!(!metrics.contains(&word), "the routing gateway's metrics tell: {word}");
    }

    // A whole withdrawal reaches the sealed case: the routing gateway erases
    // what it holds (it knew which case, and that it was whole: nothing more).
    let withdrawn = crate::helpers::send(
        crate::helpers::client_for(Who::IomRome).post(ita.url(&format!("/v1/referrals/{asylum_id}/consent-withdrawal"))).json(&json!({})),
    )
    .await;
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.text);
    wait_for("erased at the routing gateway, confirmed to the sender", LIMIT, || async {
        status_of(ita, Who::IomRome, &asylum_id).await == "erased_at_gateway"
    })
    .await;
    assert_eq!(nga.text(&format!("SELECT state FROM inbox WHERE packet_id = '{asylum_packet}'")).await.as_deref(), Some("erased"));
    let gone = nga.get(Who::NgaHealth, &format!("/v1/inbox/{asylum_packet}")).await;
    assert_eq!(gone.status, 410, "{}", gone.text);
    let withdrawal = ita.text("SELECT packet FROM outbox WHERE packet_type = 'withdrawal'").await.unwrap();
    let outer = as_the_routing_gateway_reads_it(&federation, &withdrawal);
    assert_eq!((outer.in_reply_to.as_deref(), outer.erase), (Some(asylum_packet.as_str()), true));
    assert!(outer.end_to_end.is_some() && outer.body.is_null());

    // Nothing of the case in what either gateway logged.
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for value in &secrets {
        assert!(!logged.contains(value.as_str()), "logged a personal value");
    }
}
