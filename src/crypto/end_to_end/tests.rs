use base64::Engine;
use crate::domain::onward::{OnwardGrant, OnwardLimits};
use crate::domain::{DataCategory, RecipientKind};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, TimeZone};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::crypto::test_keys::{member, Member, Trust};
use crate::crypto::jose_keys::{generate, public_of, KeyUse};
use crate::crypto::packet::{open, seal, OpenError, Receiver, SealedPacket};

/// An organisation's key pair.
fn organisation_keys() -> (DecryptionKey, EncryptionKey) {
    let jwk = generate(KeyUse::Enc).unwrap();
    (DecryptionKey::from_jwk(&jwk).unwrap(), EncryptionKey::from_jwk(&public_of(&jwk).unwrap()).unwrap())
}

struct Federation {
    ita: Member,
    gin: Member,
    trust: Trust,
    red_cross: (DecryptionKey, EncryptionKey),
}

fn federation() -> Federation {
    let (ita, gin) = (member("ITA"), member("GIN"));
    let trust = Trust::default().with(&ita, true).with(&gin, true);
    Federation { ita, gin, trust, red_cross: organisation_keys() }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap() + Duration::milliseconds(417)
}

fn red_cross() -> OrgId {
    OrgId::parse("gin-red-cross").unwrap()
}

fn referral(federation: &Federation, body: Value) -> PacketClaims {
    PacketClaims {
        packet_id: "0196f3a0-0000-7000-8000-000000000001".to_owned(),
        packet_type: PacketType::Referral,
        issuer: federation.ita.country,
        audience: federation.gin.country,
        recipient: red_cross(),
        purpose: Some(Purpose::FamilyTracing),
        policy_version: Some("ita-2026-11".to_owned()),
        decision_id: Some("d-1".to_owned()),
        consent_expires_at: Some(now() + Duration::days(90)),
        retention_until: Some(now() + Duration::days(365)),
        retention_days_after_closure: Some(30),
        issued_at: now(),
        expires_at: now() + Duration::days(7) + Duration::milliseconds(3),
        handover: true,
        priority: Priority::Emergency,
        body,
        end_to_end: None,
        in_reply_to: None,
        erase: false,
        requested_by: None,
        answers: None,
        onward: Some(OnwardLimits {
            grants: vec![OnwardGrant {
                categories: [DataCategory::Identity].into(),
                purposes: [Purpose::FamilyTracing].into(),
                recipient_kinds: [RecipientKind::ChildProtection].into(),
                until: now() + Duration::days(90),
            }],
            refused_organisations: Default::default(),
        }),
    }
}

/// Sealed end to end and gateway to gateway, as the sending gateway does.
fn sealed(federation: &Federation, claims: &PacketClaims, withdrawal: Option<WithdrawalRouting>) -> SealedPacket {
    let outer = seal_for_organisation(claims, &federation.ita.signing, &federation.red_cross.1, withdrawal).unwrap();
    seal(&outer, &federation.ita.signing, &federation.gin.encryption).unwrap()
}

/// Opens a packet as the routing gateway does.
fn open_at_gin(federation: &Federation, packet: &SealedPacket) -> Result<PacketClaims, OpenError> {
    let keys = [federation.gin.decryption.clone()];
    let receiver = Receiver {
        country: federation.gin.country,
        keys: &keys,
        now: now(),
        max_skew: Duration::minutes(5),
        max_bytes: 1024 * 1024,
        max_lifetime: Duration::days(30),
    };
    open(packet.as_str().as_bytes(), &receiver, &federation.trust, Some(federation.ita.country))
}

/// What the routing gateway reads of a packet.
fn routed(federation: &Federation, packet: &SealedPacket) -> PacketClaims {
    open_at_gin(federation, packet).unwrap()
}

fn tracing_body() -> Value {
    json!({
        "identity": { "given_name": "Mariama", "family_name": "Diallo", "date_of_birth": "2009-03-14" },
        "family_links": { "sought": [{ "relationship": "mother", "last_known_place": "Kankan" }] },
    })
}

fn header_members(compact: &str) -> Vec<String> {
    let header = compact.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    let mut names: Vec<String> = header.as_object().unwrap().keys().cloned().collect();
    names.sort_unstable();
    names
}

#[test]
fn the_organisation_opens_what_the_sending_gateway_sealed_for_it() {
    let federation = federation();
    let sent = referral(&federation, tracing_body());
    let outer = routed(&federation, &sealed(&federation, &sent, None));
    let inner = open_as_organisation(outer.end_to_end.as_deref().unwrap(), std::slice::from_ref(&federation.red_cross.0), &federation.trust, &red_cross()).unwrap();
    assert!(belongs_to(&inner, &outer.packet_id, outer.issuer));
    assert_eq!(inner.body, sent.body);
    assert_eq!(inner.purpose, Some(Purpose::FamilyTracing));
    assert_eq!(inner.policy_version.as_deref(), Some("ita-2026-11"));
    assert_eq!(inner.consent_expires_at, sent.consent_expires_at);
    assert_eq!(inner.retention_until, sent.retention_until);
    assert_eq!(inner.retention_days_after_closure, Some(30));
    assert!(inner.handover);
    assert_eq!(inner.priority, Priority::Emergency);
    assert!(inner.onward.is_some() && inner.onward == sent.onward, "what it may pass on, for the organisation alone to see");
    assert!(inner.pad.bytes().all(|b| b == b' '));
}

#[test]
fn the_routing_gateway_reads_routing_facts_only() {
    let federation = federation();
    let sent = referral(&federation, tracing_body());
    let outer = routed(&federation, &sealed(&federation, &sent, None));
    let text = serde_json::to_value(&outer).unwrap();
    let mut names: Vec<&str> = text.as_object().unwrap().keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["audience", "end_to_end", "expires_at", "issued_at", "issuer", "packet_id", "recipient", "type"]);
    assert_eq!(outer.recipient, red_cross());
    assert!(outer.purpose.is_none() && outer.retention_until.is_none() && outer.consent_expires_at.is_none() && !outer.handover);
    assert_eq!(outer.priority, Priority::Normal, "an emergency is for the organisation alone to see");
    // Times to the second: the outer claims of two packets have one length.
    assert_eq!(outer.issued_at.timestamp_subsec_nanos(), 0);
    assert_eq!(outer.expires_at.timestamp_subsec_nanos(), 0);
    assert!(outer.expires_at <= sent.expires_at);
    // The gateway's own key does not open the inner envelope.
    let gateway_key = [federation.gin.decryption.clone()];
    assert_eq!(open_as_organisation(outer.end_to_end.as_deref().unwrap(), &gateway_key, &federation.trust, &red_cross()), Err(InnerError::Undecryptable));
}

#[test]
fn a_withdrawal_tells_the_routing_gateway_which_case_and_whether_whole_and_nothing_else() {
    let federation = federation();
    let mut withdrawal = referral(&federation, json!({ "in_reply_to": "0196f3a0-0000-7000-8000-000000000001", "categories": ["health"] }));
    withdrawal.packet_type = PacketType::Withdrawal;
    withdrawal.packet_id = "0196f3a0-0000-7000-8000-000000000009".to_owned();
    let routing = WithdrawalRouting { in_reply_to: "0196f3a0-0000-7000-8000-000000000001".to_owned(), whole: false };
    let outer = routed(&federation, &sealed(&federation, &withdrawal, Some(routing)));
    assert_eq!(outer.in_reply_to.as_deref(), Some("0196f3a0-0000-7000-8000-000000000001"));
    assert!(!outer.erase);
    assert!(!serde_json::to_string(&outer).unwrap().contains("health"));
    let inner = open_as_organisation(outer.end_to_end.as_deref().unwrap(), std::slice::from_ref(&federation.red_cross.0), &federation.trust, &red_cross()).unwrap();
    assert_eq!(inner.body["categories"], json!(["health"]));
}

#[test]
fn packets_in_one_bucket_have_one_size_whatever_categories_they_hold() {
    let federation = federation();
    let small = referral(&federation, json!({ "identity": { "given_name": "Ali" } }));
    let larger = referral(&federation, tracing_body());
    let (a, b) = (sealed(&federation, &small, None), sealed(&federation, &larger, None));
    assert_eq!(a.as_str().len(), b.as_str().len());
    // A body past the first bucket fills the next one.
    let long = referral(&federation, json!({ "case_notes": { "text": "x".repeat(5000) } }));
    assert!(sealed(&federation, &long, None).as_str().len() > a.as_str().len());
}

#[test]
fn buckets_grow_by_the_list_then_by_the_largest() {
    assert_eq!(bucket_for(1), 4096);
    assert_eq!(bucket_for(4096), 4096);
    assert_eq!(bucket_for(4097), 8192);
    assert_eq!(bucket_for(256 * 1024 + 1), 512 * 1024);
}

#[test]
fn a_forged_or_misaddressed_envelope_is_refused() {
    let federation = federation();
    let sent = referral(&federation, tracing_body());
    let outer = routed(&federation, &sealed(&federation, &sent, None));
    let inner = outer.end_to_end.as_deref().unwrap();
    let keys = [federation.red_cross.0.clone()];
    // Signed by a gateway the directory does not list.
    let stranger = member("ITA");
    let forged = seal_for_organisation(&sent, &stranger.signing, &federation.red_cross.1, None).unwrap();
    assert_eq!(open_as_organisation(forged.end_to_end.as_deref().unwrap(), &keys, &federation.trust, &red_cross()), Err(InnerError::UnknownSigner));
    // Signed by a member, in another member's name.
    let mut posing = sent.clone();
    posing.issuer = federation.gin.country;
    let posed = seal_for_organisation(&posing, &federation.ita.signing, &federation.red_cross.1, None).unwrap();
    assert_eq!(open_as_organisation(posed.end_to_end.as_deref().unwrap(), &keys, &federation.trust, &red_cross()), Err(InnerError::IssuerMismatch));
    // Another organisation's.
    let other = OrgId::parse("gin-child-protection").unwrap();
    assert_eq!(open_as_organisation(inner, &keys, &federation.trust, &other), Err(InnerError::Mismatch));
    // Not an envelope at all, or one with its ciphertext altered.
    assert_eq!(open_as_organisation("not.a.jwe", &keys, &federation.trust, &red_cross()), Err(InnerError::Malformed));
    let mut parts: Vec<String> = inner.split('.').map(str::to_owned).collect();
    let ciphertext = parts.get_mut(3).unwrap();
    let flipped = if ciphertext.starts_with('A') { "B" } else { "A" };
    ciphertext.replace_range(0..1, flipped);
    assert_eq!(open_as_organisation(&parts.join("."), &keys, &federation.trust, &red_cross()), Err(InnerError::Undecryptable));
    // An outer packet, whatever its keys, is not an inner envelope.
    let outer_packet = seal(&sent, &federation.ita.signing, &federation.red_cross.1).unwrap();
    assert_eq!(open_as_organisation(outer_packet.as_str(), &keys, &federation.trust, &red_cross()), Err(InnerError::Undecryptable));
}

#[test]
fn an_outer_packet_with_a_malformed_withdrawn_id_is_refused() {
    let federation = federation();
    let mut withdrawal = referral(&federation, json!({}));
    withdrawal.packet_type = PacketType::Withdrawal;
    let routing = WithdrawalRouting { in_reply_to: "not an id!".to_owned(), whole: true };
    let packet = sealed(&federation, &withdrawal, Some(routing));
    assert_eq!(open_at_gin(&federation, &packet), Err(OpenError::MalformedId));
}

/// Every string value in `value`, at any depth.
fn strings(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::String(text) => into.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| strings(item, into)),
        Value::Object(members) => members.values().for_each(|member| strings(member, into)),
        _ => {}
    }
}

fn category() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["identity", "contact", "health", "asylum", "trafficking", "family_links", "case_notes", "vulnerability"])
}

fn case_body() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(category(), prop::collection::btree_map("[a-z_]{3,12}", "[A-Za-z0-9 ]{8,200}", 1..6), 1..6)
        .prop_map(|categories| serde_json::to_value(categories).unwrap())
}

fn purpose() -> impl Strategy<Value = Purpose> {
    prop::sample::select(vec![Purpose::Return, Purpose::Reintegration, Purpose::FamilyTracing])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the case, the routing gateway sees the routing fields and
    /// nothing else: in the claims, in either envelope's header, and no
    /// value of the case anywhere in what it can read.
    #[test]
    fn outer_headers_hold_routing_fields_only(
        body in case_body(),
        purpose in purpose(),
        handover: bool,
        closure in prop::option::of(0u32..3650),
        priority in prop::sample::select(Priority::ALL),
        replying in any::<bool>(),
    ) {
        let federation = federation();
        let mut sent = referral(&federation, body.clone());
        sent.purpose = Some(purpose);
        sent.handover = handover;
        sent.priority = priority;
        sent.retention_days_after_closure = closure;
        // A request names who asked (inside only); a reply, the request it answers (outside: it routes).
        if replying {
            sent.answers = Some("request-packet".to_owned());
        } else {
            sent.requested_by = Some(crate::domain::OrgId::parse("ita-child-protection").unwrap());
        }
        let packet = sealed(&federation, &sent, None);
        let outer = routed(&federation, &packet);
        let readable = serde_json::to_value(&outer).unwrap();
        for name in readable.as_object().unwrap().keys() {
            prop_assert!(ROUTING_FIELDS.contains(&name.as_str()), "outer claim {name}");
        }
        let text = readable.to_string();
        let mut values = Vec::new();
        strings(&body, &mut values);
        for value in values.iter().chain(body.as_object().unwrap().keys()) {
            prop_assert!(!text.contains(value.as_str()));
        }
        prop_assert!(!text.contains(purpose.as_str()) && !text.contains("ita-2026-11") && !text.contains("ita-child-protection"));
        prop_assert_eq!(outer.answers.is_some(), replying);
        prop_assert_eq!(header_members(packet.as_str()), ["alg", "enc", "epk", "kid", "typ"]);
        prop_assert_eq!(header_members(outer.end_to_end.as_deref().unwrap()), ["alg", "enc", "epk", "kid", "typ"]);
        // And the organisation gets it all back.
        let inner = open_as_organisation(outer.end_to_end.as_deref().unwrap(), std::slice::from_ref(&federation.red_cross.0), &federation.trust, &red_cross()).unwrap();
        prop_assert_eq!(inner.body, body);
        prop_assert_eq!(inner.purpose, Some(purpose));
        prop_assert_eq!(inner.requested_by.is_some(), !replying);
        prop_assert_eq!(inner.priority, priority);
    }

    /// The size of a packet is a function of its bucket alone.
    #[test]
    fn a_packet_s_size_tells_its_bucket_and_nothing_more(a in case_body(), b in case_body()) {
        let federation = federation();
        let keys = [federation.red_cross.0.clone()];
        let mut seen = Vec::new();
        for body in [a, b] {
            let packet = sealed(&federation, &referral(&federation, body), None);
            let outer = routed(&federation, &packet);
            let mut inner = open_as_organisation(outer.end_to_end.as_deref().unwrap(), &keys, &federation.trust, &red_cross()).unwrap();
            inner.pad.clear();
            seen.push((bucket_for(serde_json::to_vec(&inner).unwrap().len()), packet.as_str().len()));
        }
        let (first, second) = (seen[0], seen[1]);
        prop_assert_eq!(first.0 == second.0, first.1 == second.1);
    }
}

/// Claims with every bounded field at its longest, so that the size bound's
/// allowance for them is put to the test.
fn longest_claims(federation: &Federation, body: Value) -> PacketClaims {
    let mut claims = referral(federation, body);
    claims.packet_id = "p".repeat(64);
    claims.recipient = OrgId::parse(&"r".repeat(64)).unwrap();
    claims.policy_version = Some(format!("sha256:{}", "f".repeat(16)));
    claims.decision_id = Some("d".repeat(64));
    claims.retention_days_after_closure = Some(u32::MAX);
    claims
}

/// A body of about `len` bytes, with characters JSON escapes and multi-byte ones.
fn body_of(len: usize) -> Value {
    let unit = "a\"b\\é\n漢";
    json!({ "notes": unit.repeat(len / unit.len() + 1) })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// What a sending gateway compares with a peer's limit before it accepts
    /// a case is never below the packet it later seals, and not far above it.
    #[test]
    fn the_size_bound_holds_for_every_sealed_packet(len in 0usize..400_000, routing in any::<bool>()) {
        let federation = federation();
        let body = body_of(len);
        let body_len = serde_json::to_vec(&body).unwrap().len();
        let claims = longest_claims(&federation, body);
        let packet = if routing {
            sealed(&federation, &claims, Some(WithdrawalRouting { in_reply_to: "w".repeat(64), whole: true }))
        } else {
            seal(&claims, &federation.ita.signing, &federation.gin.encryption).unwrap()
        };
        let actual = packet.as_str().len();
        let bound = crate::crypto::packet::sealed_size_bound(body_len, routing);
        prop_assert!(actual <= bound, "sealed {actual} bytes, bound {bound}");
        // Gateway to gateway the bound is tight. End to end the inner claims
        // go through base64 four times, and their padding bucket may be the
        // next one up, never more.
        let slack = if routing { (bucket_for(body_len + 2048) - bucket_for(body_len)) * 256 / 81 + 4096 } else { 2048 };
        prop_assert!(bound - actual <= slack, "bound {bound} is {} above the sealed {actual} bytes", bound - actual);
    }
}
