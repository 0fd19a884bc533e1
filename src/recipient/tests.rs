use chrono::{Duration, TimeZone};
use josekit::jwk::Jwk;
use serde_json::{json, Value};

use super::*;
use crate::crypto::end_to_end::seal_for_organisation;
use crate::crypto::jose_keys::{generate, public_of, EncryptionKey, KeyUse, SigningKey};
use crate::crypto::packet::{PacketClaims, PacketType};
use crate::directory::{published_key, DirectoryDocument};
use crate::domain::Purpose;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn country(code: &str) -> CountryCode {
    CountryCode::parse(code).unwrap()
}

fn red_cross() -> OrgId {
    OrgId::parse("gin-red-cross").unwrap()
}

/// Italy sends, Guinea's gateway routes, the Guinean Red Cross opens.
struct Federation {
    italy: SigningKey,
    guinea: SigningKey,
    organisation: Jwk,
    directory: Directory,
}

fn federation() -> Federation {
    let (italy, guinea, organisation) = (generate(KeyUse::Sig).unwrap(), generate(KeyUse::Sig).unwrap(), generate(KeyUse::Enc).unwrap());
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/directory.example.json")).unwrap();
    let mut document: DirectoryDocument = serde_json::from_str(&text).unwrap();
    let (from, until) = (now() - Duration::days(30), now() + Duration::days(335));
    for (code, key) in [("ITA", &italy), ("GIN", &guinea)] {
        let gateway = document.gateways.iter_mut().find(|g| g.country == country(code)).unwrap();
        gateway.keys = vec![published_key(key, from, until, KeyUse::Sig).unwrap()];
    }
    let entry = document.organisations.iter_mut().find(|o| o.id == red_cross()).unwrap();
    entry.keys = vec![published_key(&organisation, from, until, KeyUse::Enc).unwrap()];
    Federation {
        italy: SigningKey::from_jwk(&italy).unwrap(),
        guinea: SigningKey::from_jwk(&guinea).unwrap(),
        organisation,
        directory: Directory::from_document(document).unwrap(),
    }
}

impl Federation {
    fn keys(&self) -> Vec<DecryptionKey> {
        vec![DecryptionKey::from_jwk(&self.organisation).unwrap()]
    }

    /// The outer claims Italy sends, the envelope in `end_to_end`.
    fn sealed(&self, signer: &SigningKey) -> PacketClaims {
        let to = EncryptionKey::from_jwk(&public_of(&self.organisation).unwrap()).unwrap();
        seal_for_organisation(&referral(), signer, &to, None).unwrap()
    }

    fn open(&self, delivered: &str) -> Result<Opened, RecipientError> {
        open_delivered(delivered, &self.keys(), &self.directory, &red_cross(), now())
    }
}

const PACKET_ID: &str = "0196f3a0-0000-7000-8000-000000000001";

fn referral() -> PacketClaims {
    PacketClaims {
        packet_id: PACKET_ID.to_owned(),
        packet_type: PacketType::Referral,
        issuer: country("ITA"),
        audience: country("GIN"),
        recipient: red_cross(),
        purpose: Some(Purpose::FamilyTracing),
        policy_version: Some("ita-2026-11".to_owned()),
        decision_id: Some("d-1".to_owned()),
        consent_expires_at: Some(now() + Duration::days(90)),
        retention_until: Some(now() + Duration::days(365)),
        retention_days_after_closure: None,
        issued_at: now(),
        expires_at: now() + Duration::days(7),
        handover: false,
        priority: Default::default(),
        body: body(),
        end_to_end: None,
        in_reply_to: None,
        erase: false,
        requested_by: None,
        answers: None,
        onward: None,
    }
}

fn body() -> Value {
    json!({ "identity": { "given_name": "Mariama", "family_name": "Diallo" }, "family_links": { "sought": [{ "relationship": "mother", "last_known_place": "Kankan" }] } })
}

/// The case document Guinea's gateway hands over for `outer`.
fn document(outer: &PacketClaims) -> Value {
    json!({
        "packet_id": outer.packet_id,
        "recipient": "gin-red-cross",
        "from_country": "ITA",
        "received_at": "2026-11-23T12:00:01.250Z",
        "state": "available",
        "handover": false,
        "case": null,
        "end_to_end": outer.end_to_end,
    })
}

/// No value of the case in `text`.
fn names_no_content(text: &str) {
    for value in ["Mariama", "Diallo", "Kankan", "mother", "family_links", "identity"] {
        assert!(!text.contains(value), "an error names a value of the case");
    }
}

#[test]
fn a_bare_envelope_opens_with_the_organisation_s_key() {
    let federation = federation();
    let outer = federation.sealed(&federation.italy);
    let opened = federation.open(outer.end_to_end.as_deref().unwrap()).unwrap();
    assert_eq!(opened.delivered_as, DeliveredAs::Envelope);
    assert!(opened.routing.is_none());
    assert_eq!(opened.content.body, body());
    assert_eq!(opened.content.issuer, country("ITA"));
    assert_eq!(opened.content.purpose, Some(Purpose::FamilyTracing));
    assert!(opened.content.pad.is_empty());
}

#[test]
fn a_case_document_opens_with_its_routing_facts() {
    let federation = federation();
    let outer = federation.sealed(&federation.italy);
    let mut document = document(&outer);
    document["some_later_member"] = json!({ "ignored": true });
    let opened = federation.open(&serde_json::to_string_pretty(&document).unwrap()).unwrap();
    assert_eq!(opened.delivered_as, DeliveredAs::CaseDocument);
    let routing = opened.routing.unwrap();
    assert_eq!(routing.packet_id, PACKET_ID);
    assert_eq!(routing.from_country, country("ITA"));
    assert_eq!(routing.received_at, Some(now() + Duration::milliseconds(1250)));
    assert_eq!(routing.state.as_deref(), Some("available"));
    assert_eq!(routing.pushed_by, None);
    assert_eq!(opened.content.body, body());
}

#[test]
fn a_case_document_naming_another_packet_is_refused() {
    let federation = federation();
    let outer = federation.sealed(&federation.italy);
    let mut other_packet = document(&outer);
    other_packet["packet_id"] = json!("0196f3a0-0000-7000-8000-000000000002");
    let error = federation.open(&other_packet.to_string()).unwrap_err();
    assert!(matches!(error, RecipientError::WrongPacket), "{error}");
    let mut other_sender = document(&outer);
    other_sender["from_country"] = json!("NGA");
    assert!(matches!(federation.open(&other_sender.to_string()), Err(RecipientError::WrongPacket)));
    let mut other_recipient = document(&outer);
    other_recipient["recipient"] = json!("gin-child-protection");
    assert!(matches!(federation.open(&other_recipient.to_string()), Err(RecipientError::WrongRecipient)));
}

#[test]
fn a_case_document_without_an_envelope_or_with_a_bad_member_is_refused_without_quoting_it() {
    let federation = federation();
    let outer = federation.sealed(&federation.italy);
    let mut readable = document(&outer);
    readable["end_to_end"] = Value::Null;
    readable["case"] = body();
    assert!(matches!(federation.open(&readable.to_string()), Err(RecipientError::NotSealed)));
    let notice = json!({ "packet_id": PACKET_ID, "recipient": "gin-red-cross", "from_country": "ITA", "state": "erased" });
    let pushed = case_push::sign(&notice, &federation.guinea).unwrap();
    assert!(matches!(federation.open(&pushed), Err(RecipientError::Notice)));
    let mut bad = document(&outer);
    bad["received_at"] = json!("Mariama Diallo");
    let error = federation.open(&bad.to_string()).unwrap_err();
    assert!(matches!(error, RecipientError::BadDocument(_)), "{error}");
    names_no_content(&error.to_string());
    let error = federation.open("{\"packet_id\": \"Mariama Diallo\"").unwrap_err();
    names_no_content(&error.to_string());
    assert!(matches!(federation.open("Mariama Diallo"), Err(RecipientError::Unrecognised)));
}

const WITHDRAWAL_ID: &str = "0196f3a0-0000-7000-8000-0000000000w1";

impl Federation {
    /// Italy's partial withdrawal of `of`, naming `categories`, sealed end to end.
    fn withdrawal(&self, of: &str, categories: &[&str]) -> PacketClaims {
        let to = EncryptionKey::from_jwk(&public_of(&self.organisation).unwrap()).unwrap();
        let claims = PacketClaims {
            packet_id: WITHDRAWAL_ID.to_owned(),
            packet_type: PacketType::Withdrawal,
            purpose: None,
            policy_version: None,
            decision_id: None,
            body: json!({ "in_reply_to": of, "categories": categories }),
            ..referral()
        };
        let routing = crate::crypto::end_to_end::WithdrawalRouting { in_reply_to: of.to_owned(), whole: false };
        seal_for_organisation(&claims, &self.italy, &to, Some(routing)).unwrap()
    }
}

fn handed_over(withdrawal: &PacketClaims) -> Value {
    json!([{ "packet_id": withdrawal.packet_id, "end_to_end": withdrawal.end_to_end }])
}

/// The organisation's tool cuts what it may pass on to what it still holds,
/// as the gateway does for a case it can read.
#[test]
fn onward_limits_are_cut_with_the_case() {
    use crate::domain::onward::{OnwardGrant, OnwardLimits};
    use crate::domain::RecipientKind;
    let federation = federation();
    let to = EncryptionKey::from_jwk(&public_of(&federation.organisation).unwrap()).unwrap();
    let limits = OnwardLimits {
        grants: vec![OnwardGrant {
            categories: [DataCategory::Identity].into(),
            purposes: [Purpose::FamilyTracing].into(),
            recipient_kinds: [RecipientKind::ChildProtection].into(),
            until: now() + Duration::days(30),
        }],
        refused_organisations: Default::default(),
    };
    let outer = seal_for_organisation(&PacketClaims { onward: Some(limits.clone()), ..referral() }, &federation.italy, &to, None).unwrap();
    let opened = federation.open(&document(&outer).to_string()).unwrap();
    assert_eq!(opened.content.onward, Some(limits));
    let mut withdrawn = document(&outer);
    withdrawn["withdrawals"] = handed_over(&federation.withdrawal(PACKET_ID, &["identity"]));
    let opened = federation.open(&withdrawn.to_string()).unwrap();
    assert_eq!(opened.content.onward, None, "nothing left to pass on");
}

#[test]
fn the_withdrawals_handed_over_with_a_case_are_cut_from_it() {
    let federation = federation();
    let outer = federation.sealed(&federation.italy);
    let mut withdrawn = document(&outer);
    withdrawn["withdrawals"] = handed_over(&federation.withdrawal(PACKET_ID, &["family"]));
    // A category the case never held, withdrawn all the same, is only named.
    let opened = federation.open(&withdrawn.to_string()).unwrap();
    assert_eq!(opened.withdrawn, [DataCategory::Family].into());
    assert_eq!(opened.content.body, body());
    let mut withdrawn = document(&outer);
    withdrawn["withdrawals"] = handed_over(&federation.withdrawal(PACKET_ID, &["identity"]));
    let opened = federation.open(&withdrawn.to_string()).unwrap();
    assert_eq!(opened.withdrawn, [DataCategory::Identity].into());
    assert_eq!(opened.content.body, json!({ "family_links": body()["family_links"] }));
    assert_eq!(serde_json::to_value(&opened).unwrap()["withdrawn"], json!(["identity"]));

    // A pushed notice carries the withdrawals alone.
    let notice = json!({ "packet_id": PACKET_ID, "recipient": "gin-red-cross", "from_country": "ITA", "state": "narrowed", "withdrawals": withdrawn["withdrawals"] });
    let pushed = case_push::sign(&notice, &federation.guinea).unwrap();
    assert!(matches!(federation.open(&pushed), Err(RecipientError::Notice)));
    let read = open_withdrawals(&pushed, &federation.keys(), &federation.directory, &red_cross(), now()).unwrap();
    assert_eq!((read.packet_id.as_str(), read.from_country, read.categories), (PACKET_ID, country("ITA"), [DataCategory::Identity].into()));
}

#[test]
fn a_withdrawal_of_another_case_or_passed_off_as_another_packet_is_refused() {
    let federation = federation();
    let outer = federation.sealed(&federation.italy);
    let of_another = federation.withdrawal("0196f3a0-0000-7000-8000-000000000002", &["identity"]);
    let document_with = |withdrawals: Value| {
        let mut with = document(&outer);
        with["withdrawals"] = withdrawals;
        federation.open(&with.to_string())
    };
    assert!(matches!(document_with(handed_over(&of_another)), Err(RecipientError::ForeignWithdrawal)));
    let mut renamed = handed_over(&federation.withdrawal(PACKET_ID, &["identity"]));
    renamed[0]["packet_id"] = json!("0196f3a0-0000-7000-8000-0000000000w2");
    assert!(matches!(document_with(renamed), Err(RecipientError::WrongPacket)));
    // The case's own envelope is not a withdrawal.
    let itself = json!([{ "packet_id": PACKET_ID, "end_to_end": outer.end_to_end }]);
    assert!(matches!(document_with(itself), Err(RecipientError::WrongPacket)));
    assert!(matches!(document_with(json!({ "packet_id": WITHDRAWAL_ID })), Err(RecipientError::BadDocument(_))));
    assert!(matches!(document_with(json!([{ "packet_id": WITHDRAWAL_ID }])), Err(RecipientError::BadDocument(_))));
}

#[test]
fn another_organisation_s_key_does_not_open_it() {
    let federation = federation();
    let outer = federation.sealed(&federation.italy);
    let stranger = vec![DecryptionKey::from_jwk(&generate(KeyUse::Enc).unwrap()).unwrap()];
    let error = open_delivered(outer.end_to_end.as_deref().unwrap(), &stranger, &federation.directory, &red_cross(), now()).unwrap_err();
    assert!(matches!(error, RecipientError::Envelope(InnerError::Undecryptable)), "{error}");
    names_no_content(&error.to_string());
    // The right key, opened in another organisation's name.
    let other = OrgId::parse("gin-child-protection").unwrap();
    let error = open_delivered(outer.end_to_end.as_deref().unwrap(), &federation.keys(), &federation.directory, &other, now()).unwrap_err();
    assert!(matches!(error, RecipientError::Envelope(InnerError::Mismatch)), "{error}");
}

#[test]
fn an_envelope_signed_by_a_key_no_gateway_publishes_is_refused() {
    let federation = federation();
    let forger = SigningKey::from_jwk(&generate(KeyUse::Sig).unwrap()).unwrap();
    let outer = federation.sealed(&forger);
    let error = federation.open(outer.end_to_end.as_deref().unwrap()).unwrap_err();
    assert!(matches!(error, RecipientError::Envelope(InnerError::UnknownSigner)), "{error}");
    let error = federation.open(&document(&outer).to_string()).unwrap_err();
    assert!(matches!(error, RecipientError::Envelope(InnerError::UnknownSigner)), "{error}");
    // Guinea's gateway, which routes it, cannot sign in Italy's name either.
    let posing = federation.sealed(&federation.guinea);
    let error = federation.open(posing.end_to_end.as_deref().unwrap()).unwrap_err();
    assert!(matches!(error, RecipientError::Envelope(InnerError::IssuerMismatch)), "{error}");
}

#[test]
fn a_push_opens_when_the_organisation_s_own_gateway_signed_it() {
    let federation = federation();
    let outer = federation.sealed(&federation.italy);
    let pushed = case_push::sign(&document(&outer), &federation.guinea).unwrap();
    let opened = federation.open(&pushed).unwrap();
    assert_eq!(opened.delivered_as, DeliveredAs::Push);
    assert_eq!(opened.routing.as_ref().and_then(|r| r.pushed_by), Some(country("GIN")));
    assert_eq!(opened.content.body, body());
    // Pushed by another gateway than the organisation's.
    let elsewhere = case_push::sign(&document(&outer), &federation.italy).unwrap();
    assert!(matches!(federation.open(&elsewhere), Err(RecipientError::Push(CasePushError::WrongGateway))));
    // Checked at a time the gateway's key is not valid.
    let late = open_delivered(&pushed, &federation.keys(), &federation.directory, &red_cross(), now() + Duration::days(400));
    assert!(matches!(late, Err(RecipientError::Push(CasePushError::UnknownSigner))));
}

#[test]
fn keys_are_read_from_one_jwk_or_a_set_and_a_public_key_is_refused() {
    let federation = federation();
    let outer = federation.sealed(&federation.italy);
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single.jwk");
    std::fs::write(&single, federation.organisation.to_string()).unwrap();
    let keys = read_keys(&single).unwrap();
    assert!(open_delivered(outer.end_to_end.as_deref().unwrap(), &keys, &federation.directory, &red_cross(), now()).is_ok());

    // During a rotation: the new key first, the one the packet was sealed to second.
    let newer = generate(KeyUse::Enc).unwrap();
    let set = dir.path().join("set.jwks");
    std::fs::write(&set, json!({ "keys": [newer.as_ref(), federation.organisation.as_ref()] }).to_string()).unwrap();
    let keys = read_keys(&set).unwrap();
    assert_eq!(keys.len(), 2);
    assert!(open_delivered(outer.end_to_end.as_deref().unwrap(), &keys, &federation.directory, &red_cross(), now()).is_ok());

    let public = dir.path().join("public.jwk");
    std::fs::write(&public, public_of(&federation.organisation).unwrap().to_string()).unwrap();
    let error = read_keys(&public).unwrap_err().to_string();
    assert!(error.contains("public.jwk") && error.contains("no private part"), "{error}");
    let signing = dir.path().join("signing.jwk");
    let signing_key = generate(KeyUse::Sig).unwrap();
    std::fs::write(&signing, signing_key.to_string()).unwrap();
    let error = read_keys(&signing).unwrap_err().to_string();
    assert!(error.contains("enc"), "{error}");
    // The private part is never quoted back.
    let d = signing_key.parameter("d").and_then(Value::as_str).unwrap();
    assert!(!error.contains(d));
    let empty = dir.path().join("empty.jwks");
    std::fs::write(&empty, r#"{"keys": []}"#).unwrap();
    assert!(matches!(read_keys(&empty), Err(RecipientError::NoKey { .. })));
}

#[test]
fn a_made_key_is_private_to_its_owner_and_its_entry_publishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let (from, until) = (now() - Duration::days(1), now() + Duration::days(364));
    let (path, entry) = make_key(&keys_dir, &red_cross(), from, until).unwrap();
    assert!(path.file_name().unwrap().to_str().unwrap().starts_with("gin-red-cross-enc-"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(!entry.jwk.contains_key("d"));
    assert_eq!((entry.not_before, entry.not_after), (from, until));
    let keys = read_keys(&path).unwrap();

    // Published in a directory, it is the key senders seal to, and the file opens what they sealed.
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/directory.example.json")).unwrap();
    let mut document: DirectoryDocument = serde_json::from_str(&text).unwrap();
    document.organisations.iter_mut().find(|o| o.id == red_cross()).unwrap().keys = vec![entry.clone()];
    let published = Directory::from_document(document).unwrap();
    let to = published.organisation_key(&red_cross(), now()).unwrap();
    assert_eq!(to.kid(), keys[0].kid());
    let federation = federation();
    let outer = seal_for_organisation(&referral(), &federation.italy, to, None).unwrap();
    let opened = open_delivered(outer.end_to_end.as_deref().unwrap(), &keys, &federation.directory, &red_cross(), now());
    assert_eq!(opened.unwrap().content.body, body());

    // Another key beside it, never over it; an empty window is refused.
    let (second, _) = make_key(&keys_dir, &red_cross(), from, until).unwrap();
    assert_ne!(second, path);
    assert_eq!(std::fs::read_dir(&keys_dir).unwrap().count(), 2);
    assert!(make_key(&keys_dir, &red_cross(), until, from).is_err());
}
