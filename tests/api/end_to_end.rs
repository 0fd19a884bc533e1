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
use referral_gateway::domain::{CountryCode, DataCategory, OrgId};
use referral_gateway::recipient;
use serde_json::{json, Value};

use crate::helpers::{Captured, personal_values, subject_refs, variant, Backend, Who};
use crate::peers::{default_window, status_of, wait_for, Federation, Peer, Webhook};

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

    // With one, an asylum-linked case and an ordinary one both go, sealed to
    // it; the asylum-linked one an emergency, a flag that would itself tell.
    let recipient_key = publish_recipient_key(&mut federation).await;
    let mut emergency = returnee("e2e-0002", true);
    emergency["priority"] = json!("emergency");
    let (asylum_id, asylum_packet) = delivered(&federation, &emergency).await;
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
        for word in telling_words().iter().chain(&["emergency", "priority"]).map(|w| w.to_string()).chain(secrets.iter().cloned()) {
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
        assert!(item.get("purpose").is_none() && item.get("priority").is_none() && item.get("respond_by").is_none(), "{listed}");
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
        // Its priority is for the organisation alone.
        assert_eq!(inner.priority.as_str(), if asylum_linked { "emergency" } else { "normal" });
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
        nga.text(&format!(
            "SELECT state || '|' || COALESCE(reasons, '') || '|' || packet_type || '|' || recipient_org || '|' || COALESCE(priority, '') || '|' || queue_rank \
             FROM inbox WHERE packet_id = '{packet_id}'"
        ))
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
        (
            "inbox",
            "packet_id || '|' || issuer || '|' || packet_type || '|' || recipient_org || '|' || state || '|' || COALESCE(reasons, '') || '|' || COALESCE(narrowed, '') \
             || '|' || COALESCE(priority, '')",
        ),
        ("audit_log", "action || '|' || outcome || '|' || COALESCE(reasons, '') || '|' || COALESCE(policy_version, '') || '|' || actor_subject"),
        ("outbox", "packet_type || '|' || recipient_org || '|' || COALESCE(purpose, '') || '|' || COALESCE(policy_version, '')"),
        ("withdrawn_packets", "packet_id"),
        ("narrowed_packets", "categories"),
    ] {
        held.extend(rows(nga, table, columns).await);
    }
    let held = held.join("\n");
    assert!(held.contains(&asylum_packet) && held.contains("acknowledged"), "the dump must see the case's rows");
    for word in telling_words().iter().chain(&["emergency"]).map(|w| w.to_string()).chain(secrets.iter().cloned()) {
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
    // What was logged of the work is in spans of ids: the sender's attempts name the referral, the receiver's screening the packet.
    assert!(logged.contains(&format!("delivery_attempt{{entry_id={asylum_id} packet_type=referral referral_id={asylum_id}}}")), "{logged}");
    assert!(logged.contains(&format!("screen{{packet_id={asylum_packet} packet_type=referral}}")), "{logged}");
    for value in &secrets {
        assert!(!logged.contains(value.as_str()), "logged a personal value");
    }
    assert!(!logged.contains("emergency"), "logged the priority of a sealed case");
}

crate::on_both_backends!(
    a_partial_withdrawal_of_a_sealed_case_reaches_its_organisation_through_a_gateway_that_cannot_read_it,
    a_webhook_organisation_is_pushed_its_sealed_case_and_then_the_sealed_withdrawal,
);

async fn a_partial_withdrawal_of_a_sealed_case_reaches_its_organisation_through_a_gateway_that_cannot_read_it(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let recipient_key = publish_recipient_key(&mut federation).await;
    let (id, packet_id) = delivered(&federation, &returnee("e2e-0101", true)).await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    wait_for("the case listed", LIMIT, || async {
        nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"].as_array().is_some_and(|items| items.len() == 1)
    })
    .await;
    let cursor = nga.get(Who::NgaHealth, "/v1/inbox").await.body["next_cursor"].as_str().unwrap().to_owned();
    let organisation = OrgId::parse(RECIPIENT).unwrap();
    let directory = nga.app().gateway().directory();
    let open = |document: &Value| {
        recipient::open_delivered(&document.to_string(), std::slice::from_ref(&recipient_key), directory.as_ref(), &organisation, federation.clock_now())
    };
    let before = open(&nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await.body).unwrap();
    assert!(before.content.body.get("health").is_some() && before.withdrawn.is_empty());

    // The person withdraws their health data.
    let path = format!("/v1/referrals/{id}/consent-withdrawal");
    let narrowed = crate::helpers::send(crate::helpers::client_for(Who::IomRome).post(ita.url(&path)).json(&json!({ "categories": ["health"] }))).await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.text);
    assert_eq!(narrowed.body["peer_notified"], true, "{}", narrowed.text);

    // It confirms by naming the withdrawal; the sender knows its categories.
    wait_for("the routing gateway's confirmation at the sender", LIMIT, || async {
        ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["erasure"]["state"] == "erased_at_gateway"
    })
    .await;

    // The routing gateway cannot read what is withdrawn: the withdrawal says which case, and not whole.
    let withdrawal = ita.text("SELECT packet FROM outbox WHERE packet_type = 'withdrawal'").await.unwrap();
    let withdrawal_id = ita.text("SELECT id FROM outbox WHERE packet_type = 'withdrawal'").await.unwrap();
    let outer = as_the_routing_gateway_reads_it(&federation, &withdrawal);
    assert_eq!((outer.in_reply_to.as_deref(), outer.erase), (Some(packet_id.as_str()), false));
    let readable = serde_json::to_value(&outer).unwrap();
    assert!(readable.as_object().unwrap().keys().all(|name| ROUTING_FIELDS.contains(&name.as_str())), "{readable}");
    assert!(!readable.to_string().replace(RECIPIENT, "").contains("health"), "the withdrawal's outer claims name the category");
    let referral = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    assert_eq!((&referral["erasure"]["scope"], &referral["erasure"]["categories"]), (&json!("categories"), &json!(["health"])), "{referral}");
    assert_eq!(referral["status"], "delivered", "the rest stays shared");

    // The case is listed again, with the withdrawal; its organisation opens
    // both and gets the case without what was withdrawn.
    let tail = nga.get(Who::NgaHealth, &format!("/v1/inbox?cursor={cursor}")).await.body;
    assert_eq!(tail["items"].as_array().map(Vec::len), Some(1), "{tail}");
    assert_eq!((tail["items"][0]["packet_id"].as_str(), &tail["items"][0]["withdrawals"]), (Some(packet_id.as_str()), &json!([withdrawal_id])), "{tail}");
    assert!(tail["items"][0].get("erased_categories").is_none(), "{tail}");
    let document = nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await.body;
    assert_eq!(document["withdrawals"][0]["packet_id"], json!(withdrawal_id), "{document}");
    let after = open(&document).unwrap();
    assert!(after.content.body.get("health").is_none(), "the organisation's tool cuts the withdrawn category");
    assert_eq!(after.content.body["identity"], before.content.body["identity"], "the rest as it was");
    assert_eq!(after.withdrawn, [DataCategory::Health].into());
    // A withdrawal handed over with another case is refused, not applied to it.
    let mut foreign = document.clone();
    foreign["withdrawals"][0]["packet_id"] = json!("another-withdrawal");
    assert!(open(&foreign).is_err());

    // Nothing the routing gateway holds names the category.
    let mut held = Vec::new();
    for (table, columns) in [
        ("inbox", "packet_id || '|' || packet_type || '|' || state || '|' || COALESCE(reasons, '') || '|' || COALESCE(narrowed, '')"),
        ("audit_log", "action || '|' || outcome || '|' || COALESCE(reasons, '')"),
        ("narrowed_packets", "categories"),
        ("outbox", "packet_type || '|' || state"),
    ] {
        held.extend(rows(nga, table, columns).await);
    }
    let held = held.join("\n").replace(RECIPIENT, "");
    assert!(held.contains(&withdrawal_id), "the dump must see the withdrawal's rows");
    assert!(!held.contains("health"), "the routing gateway's database names the withdrawn category:\n{held}");

    // The organisation erased it from its copy, and says so.
    let confirmed =
        crate::helpers::send(crate::helpers::client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/erasure-confirmed")))).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);
    assert_eq!((&confirmed.body["erasure"], &confirmed.body["withdrawals"]), (&json!("confirmed"), &json!([withdrawal_id])), "{}", confirmed.text);
    wait_for("the organisation's confirmation at the sender", LIMIT, || async {
        ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["erasure"]["state"] == "confirmed"
    })
    .await;
    assert_eq!(status_of(ita, Who::IomRome, &id).await, "delivered");

    // Withdrawn whole later: the case is erased, and the withdrawal's envelope with it.
    let whole = crate::helpers::send(crate::helpers::client_for(Who::IomRome).post(ita.url(&path)).json(&json!({}))).await;
    assert_eq!(whole.status, 200, "{}", whole.text);
    wait_for("erased at the routing gateway", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "erased_at_gateway" }).await;
    assert_eq!(nga.text(&format!("SELECT end_to_end FROM narrowed_packets WHERE withdrawal_id = '{withdrawal_id}'")).await.as_deref(), Some(""));
}

async fn a_webhook_organisation_is_pushed_its_sealed_case_and_then_the_sealed_withdrawal(backend: Backend) {
    let mut webhook = Webhook::reserve();
    webhook.start().await;
    let mut federation = Federation::prepare(backend, &["ITA", "NGA"]);
    federation.webhooks.insert(RECIPIENT.to_owned(), webhook.url());
    let jwk = jose_keys::generate(KeyUse::Enc).unwrap();
    let (from, until) = default_window();
    federation.organisation_keys.insert(RECIPIENT.to_owned(), vec![published_key(&jwk, from, until, KeyUse::Enc).unwrap()]);
    federation.launch(&["ITA", "NGA"]).await;
    let keys = vec![DecryptionKey::from_jwk(&jwk).unwrap()];
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    let submitted = ita.submit(Who::IomRome, &returnee("e2e-0201", true)).await;
    assert_eq!(submitted.status, 202, "{}", submitted.text);
    let id = submitted.body["referral_id"].as_str().unwrap().to_owned();
    wait_for("pushed, forwarded at the sender", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "forwarded" }).await;

    let organisation = OrgId::parse(RECIPIENT).unwrap();
    let directory = nga.app().gateway().directory();
    let pushed = webhook.received.lock().unwrap().clone();
    assert_eq!(pushed.len(), 1);
    let opened = recipient::open_delivered(&pushed[0], &keys, directory.as_ref(), &organisation, federation.clock_now()).unwrap();
    assert_eq!(opened.routing.as_ref().and_then(|r| r.pushed_by), CountryCode::parse("NGA").ok());
    assert!(opened.content.body.get("health").is_some());
    let packet_id = opened.routing.unwrap().packet_id;

    // Health withdrawn: the notice pushed carries the sealed withdrawal alone, which the organisation opens.
    let path = format!("/v1/referrals/{id}/consent-withdrawal");
    let narrowed = crate::helpers::send(crate::helpers::client_for(Who::IomRome).post(ita.url(&path)).json(&json!({ "categories": ["health"] }))).await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.text);
    wait_for("the narrowing notice pushed", LIMIT, || async { webhook.received.lock().unwrap().len() == 2 }).await;
    let notice_jws = webhook.received.lock().unwrap()[1].clone();
    let notice = referral_gateway::crypto::case_push::verify(&notice_jws, directory.as_ref(), federation.clock_now(), CountryCode::parse("NGA").unwrap()).unwrap();
    assert_eq!((notice["state"].as_str(), notice["packet_id"].as_str()), (Some("narrowed"), Some(packet_id.as_str())), "{notice}");
    assert!(notice.get("erased_categories").is_none() && !notice.to_string().replace(RECIPIENT, "").contains("health"), "{notice}");
    let withdrawn = recipient::open_withdrawals(&notice_jws, &keys, directory.as_ref(), &organisation, federation.clock_now()).unwrap();
    assert_eq!((withdrawn.packet_id.as_str(), withdrawn.categories), (packet_id.as_str(), [DataCategory::Health].into()));
    wait_for("the narrowing settled at the peer", LIMIT, || async {
        nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'inbox.update' AND outcome = 'narrowing_pushed'").await == 1
    })
    .await;
    // Read again, the case comes with its withdrawal and opens without health.
    let again = nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await;
    assert_eq!(again.status, 200, "{}", again.text);
    let reopened = recipient::open_delivered(&again.text, &keys, directory.as_ref(), &organisation, federation.clock_now()).unwrap();
    assert!(reopened.content.body.get("health").is_none() && reopened.withdrawn == [DataCategory::Health].into());
}
