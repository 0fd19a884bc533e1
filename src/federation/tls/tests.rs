use std::collections::HashMap;

use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::PrivatePkcs8KeyDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pin: String,
}

fn identity() -> Identity {
    let key = KeyPair::generate().unwrap();
    let certificate = CertificateParams::new(vec!["gateway.example".to_owned()]).unwrap().self_signed(&key).unwrap();
    let pin = spki_pin(&rcgen::PublicKeyData::subject_public_key_info(&key));
    Identity {
        chain: vec![certificate.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        pin,
    }
}

#[derive(Debug, Default)]
struct Listed(HashMap<String, CountryCode>);

impl Members for Listed {
    fn active_member_by_pin(&self, pin: &str) -> Option<CountryCode> {
        self.0.get(pin).copied()
    }
}

fn country(code: &str) -> CountryCode {
    CountryCode::parse(code).unwrap()
}

fn clone_key(key: &PrivateKeyDer<'static>) -> PrivateKeyDer<'static> {
    key.clone_key()
}

/// Runs one handshake and a one-byte exchange; returns what the server saw
/// of its peer, or the error either side met.
async fn handshake(
    members: Arc<dyn Members>,
    server: &Identity,
    client: &Identity,
    client_expects: CountryCode,
    client_tls12_only: bool,
) -> Result<Option<CountryCode>, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config(Arc::clone(&members), server.chain.clone(), clone_key(&server.key)).unwrap()));
    let server_members = Arc::clone(&members);
    let accepted = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(stream).await.map_err(|e| e.to_string())?;
        let peer = peer_member(server_members.as_ref(), tls.get_ref().1.peer_certificates());
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(&byte).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });

    let config = if client_tls12_only {
        let provider = provider();
        let verifier = Arc::new(MemberServerVerifier {
            members: Arc::clone(&members),
            peer: client_expects,
            algorithms: provider.signature_verification_algorithms,
        });
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(client.chain.clone(), clone_key(&client.key))
            .unwrap()
    } else {
        client_config(Arc::clone(&members), client_expects, client.chain.clone(), clone_key(&client.key)).unwrap()
    };
    let connector = TlsConnector::from(Arc::new(config));
    let client_side = async {
        let stream = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        let mut tls = connector.connect(ServerName::try_from("gateway.example").unwrap(), stream).await.map_err(|e| e.to_string())?;
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let client_result = client_side.await;
    let server_result = accepted.await.unwrap();
    match (client_result, server_result) {
        (Ok(()), Ok(peer)) => Ok(peer),
        (Err(client), Err(server)) => Err(format!("client: {client}; server: {server}")),
        (Err(client), Ok(_)) => Err(format!("client: {client}")),
        (Ok(()), Err(server)) => Err(format!("server: {server}")),
    }
}

fn members(entries: &[(&Identity, &str)]) -> Arc<dyn Members> {
    Arc::new(Listed(entries.iter().map(|(identity, code)| (identity.pin.clone(), country(code))).collect()))
}

#[tokio::test]
async fn two_listed_gateways_connect_and_the_server_knows_which_member_called() {
    let (ita, nga) = (identity(), identity());
    let listed = members(&[(&ita, "ITA"), (&nga, "NGA")]);
    let peer = handshake(listed, &nga, &ita, country("NGA"), false).await.unwrap();
    assert_eq!(peer, Some(country("ITA")));
}

#[tokio::test]
async fn a_client_certificate_no_member_lists_is_refused_in_the_handshake() {
    let (stranger, nga) = (identity(), identity());
    let listed = members(&[(&nga, "NGA")]);
    let error = handshake(listed, &nga, &stranger, country("NGA"), false).await.unwrap_err();
    assert!(error.contains("server"), "{error}");
}

#[tokio::test]
async fn a_server_with_another_members_certificate_is_refused_by_the_client() {
    let (ita, nga, gmb) = (identity(), identity(), identity());
    let listed = members(&[(&ita, "ITA"), (&nga, "NGA"), (&gmb, "GMB")]);
    // ITA dials NGA but GMB's gateway answers: a listed member, but not the one dialled.
    let error = handshake(listed, &gmb, &ita, country("NGA"), false).await.unwrap_err();
    assert!(error.contains("client"), "{error}");
}

/// The example directory with these pins, and ITA's status as given.
fn directory(ita: &Identity, nga: &Identity, ita_status: MemberStatus) -> Arc<dyn Members> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/directory.example.json")).unwrap();
    let mut document: crate::directory::DirectoryDocument = serde_json::from_str(&text).unwrap();
    for gateway in &mut document.gateways {
        match gateway.country.as_str() {
            "ITA" => {
                gateway.tls_spki_sha256 = vec![ita.pin.clone()];
                gateway.status = ita_status;
            }
            "NGA" => gateway.tls_spki_sha256 = vec![nga.pin.clone()],
            _ => {}
        }
    }
    Arc::new(Directory::from_document(document).unwrap())
}

#[tokio::test]
async fn a_suspended_member_is_refused_in_the_handshake_through_the_directory() {
    let (ita, nga) = (identity(), identity());
    let active = directory(&ita, &nga, MemberStatus::Active);
    assert_eq!(handshake(active, &nga, &ita, country("NGA"), false).await.unwrap(), Some(country("ITA")));
    let suspended = directory(&ita, &nga, MemberStatus::Suspended);
    let error = handshake(suspended, &nga, &ita, country("NGA"), false).await.unwrap_err();
    assert!(error.contains("server"), "{error}");
}

#[tokio::test]
async fn tls_1_2_is_refused() {
    let (ita, nga) = (identity(), identity());
    let listed = members(&[(&ita, "ITA"), (&nga, "NGA")]);
    assert!(handshake(listed, &nga, &ita, country("NGA"), true).await.is_err());
}

#[test]
fn the_pin_of_a_certificate_is_the_pin_of_its_key() {
    let ita = identity();
    assert_eq!(pin_of(&ita.chain[0]).unwrap(), ita.pin);
    assert!(pin_of(&CertificateDer::from(vec![1u8, 2, 3])).is_none());
}
