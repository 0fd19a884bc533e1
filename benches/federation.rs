//! End to end through two gateways on this machine: referrals submitted at
//! Italy's gateway, decided, sealed, sent over mutual TLS, receipted, opened
//! and screened at the Gambian gateway, pulled and acknowledged there by the
//! recipient (whose acknowledgement travels back as a status packet). In
//! the same run, the crypto-only ceiling: seal + open of the same packet on
//! one core. End to end is reported as a fraction of that ceiling, and every
//! referral is checked to arrive exactly once.
//!
//! Each backend runs four workloads on the same case, in turn: with
//! protocol versions 1 to 3 listed (packets posted in batches), IOM
//! Banjul with no key of its own (sealed between gateways only) and with
//! one published (every packet to it also sealed end to end, padded), the
//! difference being what end-to-end sealing costs; the first again with a
//! directory that lists no protocol version, so that every status goes
//! alone in a packet of its own as before version 2 (`federation.md` §5b);
//! and the first with versions 1 and 2 listed, statuses coalesced but each
//! packet posted alone with a receipt of its own as before version 3
//! (§5c). The last two against each other: what coalescing statuses
//! gains; the first against the last: what batches gain.
//!
//!   cargo bench --bench federation                     # both backends, one round
//!   cargo bench --bench federation -- sqlite rounds=3  # one backend, three rounds
//!   cargo bench --bench federation -- latency          # open loop at 100/s for 60 s: p50, p99
//!
//! Under `cargo test` it sends a few referrals per backend and workload only.

use std::time::{Duration, Instant};

use chrono::Utc;
use referral_gateway::demo::fixtures;
use referral_gateway::crypto::jose_keys::{generate, public_of, DecryptionKey, EncryptionKey, KeyUse, SigningKey, VerifyingKey};
use referral_gateway::crypto::packet::{open, seal, PacketClaims, PacketType, PublishedSigner, Receiver, SignerDirectory};
use referral_gateway::crypto::receipt::{self, Expected, ReceiptClaims};
use referral_gateway::directory::ProtocolVersion;
use referral_gateway::domain::{CountryCode, OrgId, Purpose};
use serde_json::Value;

#[path = "support/federation.rs"]
mod federation;
use federation::{acknowledge_all, audited, client, referral_body, referral_template, start, submit_all, Backend, BoxError, Federation};

/// Whether the recipient organisation publishes its own key.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sealing {
    GatewayOnly,
    EndToEnd,
}

/// Which protocol versions the directory lists for both gateways.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Protocol {
    /// Versions 1 to 3, all this release speaks (the example directory lists 1
    /// and 2): statuses coalesced, packets posted in batches.
    Current,
    /// Versions 1 and 2: statuses coalesced, each packet posted alone with a receipt of its own.
    WithoutBatches,
    /// None: version 1 only, one packet per status.
    FirstVersionOnly,
}

/// One of the workloads compared.
type Workload = (Sealing, Protocol);
const WORKLOADS: [Workload; 4] = [
    (Sealing::GatewayOnly, Protocol::Current),
    (Sealing::EndToEnd, Protocol::Current),
    (Sealing::GatewayOnly, Protocol::FirstVersionOnly),
    (Sealing::GatewayOnly, Protocol::WithoutBatches),
];

/// A fresh federation for `workload`.
async fn start_for(backend: Backend, (sealing, protocol): Workload) -> Result<Federation, BoxError> {
    let versions = match protocol {
        Protocol::Current => Some(vec![ProtocolVersion::FIRST, ProtocolVersion::COALESCED_STATUSES, ProtocolVersion::BATCHES]),
        Protocol::WithoutBatches => Some(vec![ProtocolVersion::FIRST, ProtocolVersion::COALESCED_STATUSES]),
        Protocol::FirstVersionOnly => Some(Vec::new()),
    };
    start(backend, sealing == Sealing::EndToEnd, versions).await
}

struct Signers(Vec<PublishedSigner>);

impl SignerDirectory for Signers {
    fn signer(&self, kid: &str, _at: chrono::DateTime<Utc>) -> Option<PublishedSigner> {
        self.0.iter().find(|s| s.key.kid() == kid).cloned()
    }
}

/// Both ceilings, per second on one core.
struct Ceilings {
    /// Seal + open of one referral packet: the ceiling.
    packet: f64,
    /// All the JOSE one referral needs end to end: its packet and the
    /// `forwarded` status packet, each sealed, opened, receipted and the
    /// receipt verified.
    referral: f64,
}

/// Seal + open of a referral packet carrying the same case, on one core,
/// for `length` each: packets per second, and referrals per second counting
/// all the JOSE a referral needs.
fn crypto_ceilings(length: Duration) -> Result<Ceilings, BoxError> {
    let now = fixtures::written_at();
    let (ita, gmb) = (CountryCode::parse("ITA")?, CountryCode::parse("GMB")?);
    let signing = generate(KeyUse::Sig)?;
    let encryption = generate(KeyUse::Enc)?;
    let signer = SigningKey::from_jwk(&signing)?;
    let to = EncryptionKey::from_jwk(&public_of(&encryption)?)?;
    let keys = vec![DecryptionKey::from_jwk(&encryption)?];
    let (gmb_signing, ita_encryption) = (generate(KeyUse::Sig)?, generate(KeyUse::Enc)?);
    let gmb_signer = SigningKey::from_jwk(&gmb_signing)?;
    let to_ita = EncryptionKey::from_jwk(&public_of(&ita_encryption)?)?;
    let ita_keys = vec![DecryptionKey::from_jwk(&ita_encryption)?];
    let directory = Signers(vec![
        PublishedSigner { country: ita, active: true, key: VerifyingKey::from_jwk(&public_of(&signing)?)? },
        PublishedSigner { country: gmb, active: true, key: VerifyingKey::from_jwk(&public_of(&gmb_signing)?)? },
    ]);
    let referral: Value = serde_json::from_str(&std::fs::read_to_string("tests/fixtures/referrals/rejected_asylum_avr.json")?)?;
    let claims = PacketClaims {
        packet_id: "ceiling".to_owned(),
        packet_type: PacketType::Referral,
        issuer: ita,
        audience: gmb,
        recipient: OrgId::parse("gmb-iom-banjul")?,
        purpose: Some(Purpose::Return),
        policy_version: Some("sha256:bench".to_owned()),
        decision_id: Some("decision".to_owned()),
        consent_expires_at: None,
        retention_until: None,
        retention_days_after_closure: None,
        issued_at: now,
        expires_at: now + chrono::Duration::days(7),
        handover: false,
        priority: Default::default(),
        body: referral.get("case").cloned().unwrap_or(Value::Null),
        end_to_end: None,
        in_reply_to: None,
        erase: false,
        requested_by: None,
        answers: None,
        onward: None,
    };
    let receiver = Receiver {
        country: gmb,
        keys: &keys,
        now,
        max_skew: chrono::Duration::minutes(5),
        max_bytes: 1024 * 1024,
        max_lifetime: chrono::Duration::days(30),
    };
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < length {
        let sealed = seal(&claims, &signer, &to)?;
        open(sealed.as_str().as_bytes(), &receiver, &directory, Some(ita))?;
        done += 1;
    }
    let packet = done as f64 / started.elapsed().as_secs_f64();

    let status = PacketClaims {
        packet_id: "ceiling-status".to_owned(),
        packet_type: PacketType::Status,
        issuer: gmb,
        audience: ita,
        purpose: None,
        policy_version: None,
        decision_id: None,
        body: serde_json::json!({ "in_reply_to": "ceiling", "status": "forwarded" }),
        ..claims.clone()
    };
    let at_italy = Receiver { country: ita, keys: &ita_keys, ..receiver };
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < length {
        for (sent, by, sealed_to, at, from, to_country) in
            [(&claims, &signer, &to, &receiver, ita, gmb), (&status, &gmb_signer, &to_ita, &at_italy, gmb, ita)]
        {
            let sealed = seal(sent, by, sealed_to)?;
            let opened = open(sealed.as_str().as_bytes(), at, &directory, Some(from))?;
            let digest = sealed.digest();
            let receiver_signer = if to_country == gmb { &gmb_signer } else { &signer };
            let receipt_claims = ReceiptClaims { packet_id: opened.packet_id.clone(), packet_sha256: digest.clone(), received_at: now, issuer: to_country, audience: from };
            let signed = receipt::sign(&receipt_claims, receiver_signer)?;
            let expected = Expected { packet_id: &opened.packet_id, packet_sha256: &digest, from: to_country, to: from };
            receipt::verify(&signed, &directory, now, &expected)?;
        }
        done += 1;
    }
    Ok(Ceilings { packet, referral: done as f64 / started.elapsed().as_secs_f64() })
}

/// One run of `referrals` end to end on a fresh federation; returns referrals per
/// second. The federation is torn down whatever the outcome.
async fn run(backend: Backend, workload: Workload, referrals: u64, limit: Duration) -> Result<f64, BoxError> {
    let federation = start_for(backend, workload).await?;
    let outcome = measure_throughput(&federation, backend, workload, referrals, limit).await;
    federation.tear_down().await;
    outcome
}

/// The throughput run on a federation started for it: submissions and
/// acknowledgements together, then every referral checked to have arrived exactly once.
async fn measure_throughput(federation: &Federation, backend: Backend, workload: Workload, referrals: u64, limit: Duration) -> Result<f64, BoxError> {
    let sealing = workload.0;
    let started = Instant::now();
    let recipient = acknowledge_all(federation, referrals, limit, None);
    // Either side's failure ends the run at once.
    let (acknowledged, accepted) = tokio::try_join!(recipient, submit_all(federation, referrals, "bench-fed"))?;
    let accepted = accepted.len() as u64;
    let elapsed = started.elapsed().as_secs_f64();
    let rate = acknowledged.cases as f64 / elapsed;

    // No packet lost, none twice: every accepted referral delivered with a
    // receipt, and taken into the recipient gateway's inbox exactly once.
    // Untimed: a batch's settlements may still be committing at Italy while
    // Gambia's recipient acknowledges what the batch carried.
    let deadline = Instant::now() + limit;
    let mut delivered = audited(&federation.ita, "packet.send", "delivered").await?;
    while delivered < referrals && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        delivered = audited(&federation.ita, "packet.send", "delivered").await?;
    }
    let received = audited(&federation.gmb, "packet.receive", "accepted").await?;
    if accepted != referrals || delivered != referrals || received != referrals || acknowledged.cases != referrals {
        return Err(format!(
            "{backend:?}, {sealing:?}: {referrals} submitted, {accepted} accepted, {delivered} packets delivered, {received} received, {} acknowledged",
            acknowledged.cases
        )
        .into());
    }
    // The workload is the one named: every case sealed end to end, or none.
    let expected_sealed = if sealing == Sealing::EndToEnd { referrals } else { 0 };
    if acknowledged.sealed != expected_sealed {
        return Err(format!("{backend:?}, {sealing:?}: {} of {referrals} cases listed as sealed end to end", acknowledged.sealed).into());
    }
    // Untimed: every acknowledgement applied at Italy exactly once, and how the statuses travelled.
    let deadline = Instant::now() + limit;
    loop {
        let applied = audited(&federation.ita, "packet.screen", "applied").await?;
        if applied == referrals {
            break;
        }
        if applied > referrals || Instant::now() > deadline {
            return Err(format!("{backend:?}, {workload:?}: {applied} statuses applied at Italy for {referrals} acknowledgements").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Italy receives nothing but these statuses; the Gambia's `statuses` entries are the coalesced packets.
    let packets_back = audited(&federation.ita, "packet.receive", "accepted").await?;
    let filter = referral_gateway::store::AuditFilter { action: Some("packet.send".to_owned()), limit: 1_000_000, ..Default::default() };
    let sent_back = federation.gmb.gateway().store.audit(&filter).await?;
    let coalesced = sent_back.iter().filter(|r| r.reasons.iter().any(|reason| reason == "type:statuses")).count();
    let (batches, alone) = posts_to_gambia(federation).await?;
    eprintln!(
        "  {backend:?}, {workload:?}: {rate:.0}/s; the {referrals} referral packets went in {batches} batches and {alone} posts of one; \
         the {referrals} statuses went back in {packets_back} packets, {coalesced} of them coalesced"
    );
    Ok(rate)
}

/// The requests the Gambian gateway answered `200` on its batches route
/// and on its packets route, from its metrics: it receives nothing but
/// the referral packets.
async fn posts_to_gambia(federation: &Federation) -> Result<(u64, u64), BoxError> {
    let url = format!("https://localhost:{}/metrics", federation.gmb.local_addr().port());
    let metrics = client(&federation.files, "iom-banjul")?.get(url).send().await?.error_for_status()?.text().await?;
    let answered = |route: &str| {
        metrics
            .lines()
            .filter(|line| line.starts_with("rgw_http_requests_total{") && line.contains(&format!("route=\"{route}\"")) && line.contains("status=\"200\""))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    Ok((answered("/federation/v1/packet-batches"), answered("/federation/v1/packets")))
}

/// Open loop (issue 23 §2): `rate` referrals per second submitted at
/// Italy's gateway for `length`, each at its own time whatever became of
/// the earlier ones, gateway-to-gateway sealing; the time from each one's
/// scheduled submission to its acknowledgement by IOM Banjul at the
/// Gambian gateway, in submission order. Timed from the schedule, so a
/// gateway that falls behind shows it in full instead of slowing the load.
/// With the example directory's protocol versions (1 and 2).
async fn latencies(backend: Backend, rate: u32, length: Duration) -> Result<Vec<Duration>, BoxError> {
    let federation = start_for(backend, (Sealing::GatewayOnly, Protocol::WithoutBatches)).await?;
    let outcome = measure_latencies(&federation, rate, length).await;
    federation.tear_down().await;
    outcome
}

/// The latency run on a federation started for it (see [`latencies`]).
async fn measure_latencies(federation: &Federation, rate: u32, length: Duration) -> Result<Vec<Duration>, BoxError> {
    let count = (f64::from(rate) * length.as_secs_f64()).round() as u64;
    let url = format!("https://localhost:{}/v1/referrals", federation.ita.local_addr().port());
    let template = referral_template()?;
    let client = client(&federation.files, "iom-rome")?;
    let recipient = acknowledge_all(federation, count, length + Duration::from_secs(120), None);
    let submitter = async {
        let started = tokio::time::Instant::now();
        let mut submissions = tokio::task::JoinSet::new();
        let mut sent = Vec::new();
        for n in 0..count {
            let scheduled = started + Duration::from_secs_f64(n as f64 / f64::from(rate));
            tokio::time::sleep_until(scheduled).await;
            let (client, url) = (client.clone(), url.clone());
            let body = referral_body(&template, "bench-latency", n);
            // A failed submission ends the run now, not once the recipient gives up.
            while let Some(submitted) = submissions.try_join_next() {
                sent.push(submitted??);
            }
            submissions.spawn(async move {
                let response = client.post(&url).header("content-type", "application/json").body(body).send().await?;
                if response.status().as_u16() != 202 {
                    return Err(format!("submit: HTTP {}", response.status()).into());
                }
                let answer: Value = response.json().await?;
                let id = answer.get("referral_id").and_then(Value::as_str).ok_or("no referral id")?.to_owned();
                Ok::<_, BoxError>((n, id, scheduled.into_std()))
            });
        }
        while let Some(submitted) = submissions.join_next().await {
            sent.push(submitted??);
        }
        sent.sort_by_key(|(n, _, _)| *n);
        Ok::<_, BoxError>(sent)
    };
    let (acknowledged, sent) = tokio::try_join!(recipient, submitter)?;
    // Which packet carried each referral: the sending gateway's own record.
    let base = format!("https://localhost:{}/v1/referrals", federation.ita.local_addr().port());
    let mut latencies = Vec::with_capacity(sent.len());
    for (_, id, scheduled) in &sent {
        let referral: Value = client.get(format!("{base}/{id}")).send().await?.error_for_status()?.json().await?;
        let packet_id = referral.pointer("/delivery/packet_id").and_then(Value::as_str).ok_or_else(|| format!("referral {id} has no packet id"))?;
        let at = acknowledged
            .at
            .get(packet_id)
            .ok_or_else(|| format!("referral {id} (packet {packet_id}) never acknowledged; {} of {count} were", acknowledged.cases))?;
        latencies.push(at.saturating_duration_since(*scheduled));
    }
    Ok(latencies)
}

/// The `q` quantile (0 to 1) of sorted durations, nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// The latency run on one backend: a steady 100/s for 60 s (under `cargo
/// test`, 10 referrals at 100/s).
async fn latency(backend: Backend, full: bool) -> Result<(), BoxError> {
    let (rate, length) = if full { (100, Duration::from_secs(60)) } else { (100, Duration::from_millis(100)) };
    let mut measured = latencies(backend, rate, length).await?;
    measured.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{backend:?}: open loop at {rate}/s for {} s ({} referrals, gateway to gateway), submission to acknowledgement at the receiving gateway: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{}",
        length.as_secs_f64(),
        measured.len(),
        ms(quantile(&measured, 0.5)),
        ms(quantile(&measured, 0.99)),
        ms(measured.last().copied().unwrap_or_default()),
        if full { "" } else { " (smoke run; debug build)" },
    );
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    let at = |i: usize| values.get(i).copied().unwrap_or(f64::NAN);
    if values.len() % 2 == 1 { at(middle) } else { (at(middle.wrapping_sub(1)) + at(middle)) / 2.0 }
}

fn rates(values: &[f64]) -> String {
    values.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
}

/// `rounds` rounds of the four workloads on one backend, each round
/// starting one further along, so that none always goes first.
async fn compare(backend: Backend, full: bool, rounds: usize) -> Result<(), BoxError> {
    let (referrals, limit) = if full { (3000, Duration::from_secs(600)) } else { (10, Duration::from_secs(60)) };
    let mut measured: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        for step in 0..WORKLOADS.len() {
            let index = (round + step) % WORKLOADS.len();
            if let (Some(workload), Some(runs)) = (WORKLOADS.get(index), measured.get_mut(index)) {
                runs.push(run(backend, *workload, referrals, limit).await?);
            }
        }
    }
    let [mut plain_runs, mut sealed_runs, mut first_runs, mut unbatched_runs] = measured;
    let runs = format!(
        "gateway to gateway only {}/s; also end to end to IOM Banjul {}/s; gateway to gateway, version 1 only (no coalesced statuses) {}/s; \
         gateway to gateway, versions 1 and 2 (no batches) {}/s",
        rates(&plain_runs),
        rates(&sealed_runs),
        rates(&first_runs),
        rates(&unbatched_runs)
    );
    let (plain, sealed, first, unbatched) = (median(&mut plain_runs), median(&mut sealed_runs), median(&mut first_runs), median(&mut unbatched_runs));
    // Extra time per referral, from the medians.
    let extra = 100.0 * (plain / sealed - 1.0);
    let gain = 100.0 * (unbatched / first - 1.0);
    let batch_gain = 100.0 * (plain / unbatched - 1.0);
    if !full {
        println!("{backend:?}: smoke run, {referrals} referrals end to end per workload ({runs}; debug build)");
        return Ok(());
    }
    let ceiling = crypto_ceilings(Duration::from_secs(5))?;
    println!(
        "{backend:?}: {referrals} referrals end to end per run (submitted at ITA, receipted, screened and acknowledged at GMB), lost 0, duplicated 0. \
         Runs: {runs}. Medians {plain:.0}/s, {sealed:.0}/s, {first:.0}/s and {unbatched:.0}/s: end-to-end sealing costs {extra:.0} % extra time per referral; \
         coalescing statuses gains {gain:.0} % in rate (versions 1 and 2 against 1), batches {batch_gain:.0} % more (all three against 1 and 2). \
         Crypto-only ceiling (seal + open, one core) {:.0}/s; gateway-only end to end = {:.0} % of it; \
         all the JOSE of one referral (2 packets sealed, opened, receipted, verified; one core) {:.0}/s; gateway-only end to end = {:.0} % of that \
         (versions 1 and 2: {:.0} %; version 1 only: {:.0} %)",
        ceiling.packet,
        100.0 * plain / ceiling.packet,
        ceiling.referral,
        100.0 * plain / ceiling.referral,
        100.0 * unbatched / ceiling.referral,
        100.0 * first / ceiling.referral,
    );
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let rounds = match args.iter().find_map(|a| a.strip_prefix("rounds=")) {
        Some(n) => n.parse::<usize>()?.max(1),
        None => 1,
    };
    // `latency`: the open-loop run instead of the throughput rounds (both under `cargo test`).
    let latency_only = args.iter().any(|a| a == "latency");
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--") && !a.starts_with("rounds=") && *a != "latency").collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let name = format!("{backend:?}").to_lowercase();
        if only.is_empty() || only.iter().any(|o| name.contains(o.as_str())) {
            if !latency_only {
                runtime.block_on(compare(backend, full, rounds))?;
            }
            if latency_only || !full {
                runtime.block_on(latency(backend, full))?;
            }
        }
    }
    Ok(())
}
