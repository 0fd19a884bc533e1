//! Client certificates of every X.509 version are answered alike: an
//! unknown one gets `401 unknown_certificate` (audited), a registered one is
//! served, and in both cases the client must prove it holds the key. A v1
//! certificate (no extensions, as `openssl x509 -req` makes them) used to
//! have its TLS handshake dropped: webpki reads only v3 end-entity
//! certificates.

use std::path::Path;
use std::sync::Arc;

use referral_gateway::config::CertificateFingerprint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use crate::helpers::{fixture_time, send, spawn_app_with, test_ca_pem, variant, Backend, Who};
use crate::on_both_backends;

on_both_backends!(a_version_1_client_certificate_is_answered_like_a_version_3_one);

struct Certificate {
    chain: Vec<CertificateDer<'static>>,
    key_pem: String,
    fingerprint: String,
}

/// A self-signed X.509 v1 certificate and its P-256 key, made by the
/// `openssl` command line as an operator would (rcgen makes v3 only).
fn version_1_certificate(dir: &Path, name: &str) -> Certificate {
    let (key, request, certificate) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.csr")), dir.join(format!("{name}.pem")));
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl").args(args).output().expect("the openssl command line makes the v1 certificates");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let (key, request, certificate) = (key.to_str().unwrap(), request.to_str().unwrap(), certificate.to_str().unwrap());
    let subject = format!("/CN={name}");
    openssl(&["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-subj", &subject, "-out", request]);
    openssl(&["x509", "-req", "-in", request, "-signkey", key, "-days", "30", "-out", certificate]);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate).unwrap().collect::<Result<_, _>>().unwrap();
    // Make sure what is tested is a v1 certificate, whatever openssl's defaults become.
    assert!(
        matches!(webpki::EndEntityCert::try_from(&chain[0]), Err(webpki::Error::UnsupportedCertVersion)),
        "openssl made a certificate of another version than 1"
    );
    let fingerprint = CertificateFingerprint::of_der(chain[0].as_ref()).display();
    Certificate { chain, key_pem: std::fs::read_to_string(key).unwrap(), fingerprint }
}

/// An HTTPS client presenting `certificate` with the private key `key_pem`
/// (not necessarily its own) over TLS 1.2 or 1.3. Built on rustls directly:
/// reqwest's own identity loader refuses v1 certificates (it parses them
/// with webpki), and would refuse a key that is not the certificate's.
fn client_presenting(certificate: &Certificate, key_pem: &str, tls12: bool) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(test_ca_pem().as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let key = provider.key_provider.load_private_key(PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap()).unwrap();
    let presented = rustls::sign::CertifiedKey::new(certificate.chain.clone(), key);
    let version = if tls12 { &rustls::version::TLS12 } else { &rustls::version::TLS13 };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(presented)));
    reqwest::Client::builder().use_preconfigured_tls(config).build().unwrap()
}

async fn a_version_1_client_certificate_is_answered_like_a_version_3_one(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let registered = version_1_certificate(dir.path(), "registered-v1");
    let unknown = version_1_certificate(dir.path(), "unknown-v1");
    let registration = format!(
        "\n[auth.clients.v1_client]\nfingerprint = \"{}\"\norg = \"ita-iom-rome\"\nroles = [\"submitter\"]\n",
        registered.fingerprint
    );
    let app = spawn_app_with(backend, fixture_time(), &registration).await;

    // The v3 certificate the gateway does not know: the answer to match.
    let stranger = app.get(Who::Stranger, "/v1/audit").await;
    assert_eq!((stranger.status, stranger.problem(), stranger.body["code"].as_str()), (401, "unauthenticated", Some("unknown_certificate")));

    for tls12 in [false, true] {
        let version = if tls12 { "TLS 1.2" } else { "TLS 1.3" };
        let unknown_client = client_presenting(&unknown, &unknown.key_pem, tls12);
        let reply = send(unknown_client.get(app.url("/v1/audit"))).await;
        assert_eq!(
            (reply.status, reply.problem(), &reply.body["code"]),
            (stranger.status, stranger.problem(), &stranger.body["code"]),
            "{version}: {}",
            reply.text
        );

        // Registered, the v1 certificate is served like any other.
        let registered_client = client_presenting(&registered, &registered.key_pem, tls12);
        let referral = variant("returnee_hiv_reintegration", &format!("v1-certificate-{tls12}"), None);
        let submitted = send(registered_client.post(app.url("/v1/referrals")).json(&referral)).await;
        assert_eq!(submitted.status, 202, "{version}: {}", submitted.text);

        // Holding the certificate is not enough: the handshake is signed with
        // the certificate's key, or it fails.
        let impostor = client_presenting(&registered, &unknown.key_pem, tls12);
        let refused = impostor.get(app.url("/v1/audit")).send().await;
        let error = refused.expect_err("a v1 certificate presented without its key was let through");
        let mut chain = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            chain.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        // In TLS 1.3 the client's side of the handshake ends before the
        // server has checked its signature, so the client may already be
        // sending its request when the server's alert closes the connection:
        // then the error is the connection ending, not the alert. Either way
        // no answer came (the request failed), which is the refusal.
        let chain = chain.to_ascii_lowercase();
        let ended_by_the_handshake = chain.contains("alert") || (!tls12 && chain.contains("connection was not ready"));
        assert!(ended_by_the_handshake, "{version}: not refused by the handshake: {chain}");
    }

    // Each refusal of the unknown v1 certificate is audited under its fingerprint, as the v3 stranger's is.
    let audit = app.get_query(Who::Dpo, "/v1/audit", &[("action", "access.refused")]).await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    let refusals: Vec<(String, String)> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"]["subject"].as_str().unwrap().to_owned(), e["reasons"].to_string()))
        .collect();
    let unknown_code = json!(["unknown_certificate"]).to_string();
    let expected = [
        (Who::Stranger.fingerprint().unwrap(), unknown_code.clone()),
        (unknown.fingerprint.clone(), unknown_code.clone()),
        (unknown.fingerprint.clone(), unknown_code),
    ];
    assert_eq!(refusals, expected);
}
