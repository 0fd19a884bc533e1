//! `referral-gateway demo`: a local federation of three gateways (Italy as
//! host country, the Gambia and Guinea as countries of origin), each with
//! its own SQLite file, fresh keys and one signed directory, and small
//! built-in national systems calling their REST APIs. It narrates the
//! corridors step by step and checks each outcome; it exits non-zero at the
//! first that is not what the federation promises.

mod family;
pub mod fixtures;
pub mod sandbox;
pub mod setup;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::app::{Clock, SystemClock};
use crate::app::sending::delivery::{PeerTransport, SendFailure};
use crate::crypto::jose_keys::DecryptionKey;
use crate::domain::lifecycle::{InboxState, ReferralStatus};
use crate::domain::CountryCode;
use crate::federation::client::PeerClient;
use crate::federation::tls::Members;
use crate::startup::Application;
use crate::wire::FailureCode;
use setup::DemoFiles;

/// Longest wait for one step (delivery, screening, a status coming back).
const STEP_LIMIT: Duration = Duration::from_secs(15);

/// The Italian Red Cross's tracing service: it asks for the girl's mother
/// (steps 3 to 7), and reads the answers in its inbox with another certificate.
const ITALIAN_RED_CROSS: &str = "ita-red-cross";
const ITALIAN_RED_CROSS_INBOX: &str = "ita-red-cross-inbox";
/// The Guinean Red Cross's desk, which registers the searches of families in Guinea.
const GUINEAN_RED_CROSS_DESK: &str = "gin-red-cross-desk";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Setup(#[from] setup::SetupError),
    #[error("gateway {country} did not start: {reason}")]
    Start { country: String, reason: String },
    #[error("step failed: {0}")]
    Step(String),
}

fn step_failed(what: impl std::fmt::Display) -> DemoError {
    DemoError::Step(what.to_string())
}

/// Asks `look` every 100 ms until it finds what it looks for (`Ok(found)`),
/// for up to [`STEP_LIMIT`]; then the step fails with what it last saw
/// (`Err(seen)`).
async fn poll<T>(mut look: impl AsyncFnMut() -> Result<Result<T, String>, DemoError>) -> Result<T, DemoError> {
    let until = Instant::now() + STEP_LIMIT;
    loop {
        match look().await? {
            Ok(found) => return Ok(found),
            Err(seen) if Instant::now() > until => return Err(step_failed(seen)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The DPOs' permit of the demo: reintegration cases may be passed on to
/// organisations that are not state actors.
const ONWARD_PERMIT: &str = "@id(\"onward.reintegration_non_state\")\n\
    permit (principal, action == Action::\"refer_onward\", resource)\n\
    when { context.onward_purpose == Purpose::\"reintegration\" && !principal.state_actor };\n";

/// The demo's clock: the machine's, moved ahead when the demo shows what
/// happens once a deadline has passed (it cannot wait hours).
#[derive(Debug, Default)]
struct DemoClock {
    ahead: std::sync::Mutex<chrono::Duration>,
}

impl DemoClock {
    fn move_ahead(&self, by: chrono::Duration) {
        if let Ok(mut ahead) = self.ahead.lock() {
            *ahead += by;
        }
    }
}

impl Clock for DemoClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let ahead = self.ahead.lock().map(|ahead| *ahead).unwrap_or_default();
        SystemClock.now() + ahead
    }
}

struct Gateway {
    country: CountryCode,
    app: Application,
}

struct Demo {
    files: DemoFiles,
    gateways: Vec<Gateway>,
    started: Instant,
    /// The gateways' clock and the demo's: key windows, consents and the
    /// fixtures' dates all derive from it.
    clock: Arc<dyn Clock>,
    /// The same clock, to move it ahead (step 8: a deadline passes).
    ahead: Arc<DemoClock>,
}

/// Runs the demo in `dir`; with `keep_running`, leaves the federation up
/// afterwards until Ctrl-C.
pub async fn run(dir: &Path, keep_running: bool) -> Result<(), DemoError> {
    let started = Instant::now();
    let ahead = Arc::new(DemoClock::default());
    let clock: Arc<dyn Clock> = Arc::clone(&ahead) as Arc<dyn Clock>;
    let files = setup::create(dir, &setup::Options::default(), clock.now())?;
    let mut gateways = Vec::new();
    for (country, config) in &files.configs {
        let app = Application::build(config, Arc::clone(&clock))
            .await
            .map_err(|e| DemoError::Start { country: country.to_string(), reason: e.to_string() })?;
        gateways.push(Gateway { country: *country, app });
    }
    let demo = Demo { files, gateways, started, clock, ahead };
    demo.list_endpoints()?;
    demo.say(&format!(
        "Three gateways are up, each with its own database and keys, trusting one signed directory:\n{}",
        demo.gateways.iter().map(|g| format!("  {}  API {}  federation port {}", g.country, g.app.base_url(), g.federation_port())).collect::<Vec<_>>().join("\n")
    ));
    demo.assisted_voluntary_return().await?;
    demo.asylum_firewall().await?;
    let tracing = demo.family_tracing().await?;
    demo.searches_meet(&tracing).await?;
    demo.family_assessment().await?;
    demo.tampered_packet().await?;
    demo.consent_withdrawn(&tracing).await?;
    demo.emergency_override().await?;
    demo.onward_referral().await?;
    demo.audit_chains().await?;
    demo.say(&format!("All steps behaved as the federation promises ({:.1} s).", demo.started.elapsed().as_secs_f64()));
    if keep_running {
        demo.explore_hints()?;
        let _ = tokio::signal::ctrl_c().await;
    }
    for gateway in demo.gateways {
        gateway.app.shut_down().await;
    }
    Ok(())
}

impl Gateway {
    fn federation_port(&self) -> u16 {
        self.app.federation_addr().map(|a| a.port()).unwrap_or_default()
    }
}

impl Demo {
    fn say(&self, text: &str) {
        println!("\n[{:>5.1} s] {text}", self.started.elapsed().as_secs_f64());
    }

    fn gateway(&self, country: &str) -> Result<&Gateway, DemoError> {
        self.gateways.iter().find(|g| g.country.as_str() == country).ok_or_else(|| step_failed(format!("no gateway for {country}")))
    }

    /// Publishes edition 2 of the directory, with the endpoints now known.
    fn list_endpoints(&self) -> Result<(), DemoError> {
        let endpoints: Vec<(CountryCode, String)> =
            self.gateways.iter().map(|g| (g.country, format!("https://127.0.0.1:{}", g.federation_port()))).collect();
        let directory = self.files.publish(2, &endpoints, self.clock.now())?;
        for gateway in &self.gateways {
            gateway.app.gateway().replace_directory(directory.clone()).map_err(step_failed)?;
        }
        Ok(())
    }

    /// A national system: an HTTPS client with its certificate.
    fn system(&self, name: &str) -> Result<reqwest::Client, DemoError> {
        self.files.client_builder(name).map_err(step_failed)?.build().map_err(step_failed)
    }

    async fn call(&self, system: &str, country: &str, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<(u16, Value), DemoError> {
        let port = self.gateway(country)?.app.local_addr().port();
        let mut request = self.system(system)?.request(method, format!("https://localhost:{port}{path}"));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(step_failed)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(step_failed)?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Submits a fixture as IOM Rome.
    async fn submit(&self, fixture: &str, destination: &str, key: &str, handover: bool) -> Result<(u16, Value), DemoError> {
        self.submit_by("iom-rome", fixture, destination, key, handover).await
    }

    /// Submits a fixture as one of Italy's national systems.
    async fn submit_by(&self, system: &str, fixture: &str, destination: &str, key: &str, handover: bool) -> Result<(u16, Value), DemoError> {
        // The fixture's consent and dates, moved to today: the demo works on any date.
        let mut referral = fixtures::referral_as_of(fixture, self.clock.now()).map_err(step_failed)?;
        let fields = referral.as_object_mut().ok_or_else(|| step_failed(format!("{fixture} is not a JSON object")))?;
        fields.insert("destination".to_owned(), json!(destination));
        fields.insert("idempotency_key".to_owned(), json!(key));
        if handover {
            fields.insert("handover".to_owned(), json!(true));
        }
        self.call(system, "ITA", reqwest::Method::POST, "/v1/referrals", Some(&referral)).await
    }

    /// A referral of IOM Rome's, as Italy's API shows it.
    async fn referral(&self, id: &str) -> Result<Value, DemoError> {
        self.referral_of("iom-rome", "ITA", id).await
    }

    /// A referral as `system` follows it at its country's gateway.
    async fn referral_of(&self, system: &str, country: &str, id: &str) -> Result<Value, DemoError> {
        Ok(self.call(system, country, reqwest::Method::GET, &format!("/v1/referrals/{id}"), None).await?.1)
    }

    async fn wait_for_status(&self, id: &str, wanted: ReferralStatus) -> Result<Value, DemoError> {
        self.wait_for_status_of("iom-rome", id, wanted).await
    }

    /// Waits until a referral `system` sent from Italy shows `wanted`.
    async fn wait_for_status_of(&self, system: &str, id: &str, wanted: ReferralStatus) -> Result<Value, DemoError> {
        poll(async || {
            let referral = self.referral_of(system, "ITA", id).await?;
            Ok(if at(&referral, "/status") == wanted.as_str() {
                Ok(referral)
            } else {
                Err(format!("referral {id} did not reach `{wanted}` (it is `{}`)", at(&referral, "/status")))
            })
        })
        .await
    }

    /// The recipient's inbox, once it holds `count` cases.
    async fn inbox(&self, system: &str, country: &str, count: usize) -> Result<Vec<Value>, DemoError> {
        poll(async || {
            let (status, page) = self.call(system, country, reqwest::Method::GET, "/v1/inbox", None).await?;
            let items = at(&page, "/items").as_array().cloned().unwrap_or_default();
            Ok(if status == 200 && items.len() >= count { Ok(items) } else { Err(format!("{system}'s inbox holds {} cases, not {count}", items.len())) })
        })
        .await
    }

    /// `system` acknowledges the case `packet_id` in its inbox at `country`'s gateway.
    async fn acknowledge(&self, system: &str, country: &str, packet_id: &str) -> Result<(), DemoError> {
        let (code, _) = self.call(system, country, reqwest::Method::POST, &format!("/v1/inbox/{packet_id}/ack"), None).await?;
        if code != 200 {
            return Err(step_failed(format!("acknowledging: HTTP {code}")));
        }
        Ok(())
    }

    async fn report(&self, system: &str, country: &str, packet_id: &str, status: &str, reason: Option<&str>) -> Result<(), DemoError> {
        let body = match reason {
            Some(reason) => json!({ "status": status, "reason_code": reason }),
            None => json!({ "status": status }),
        };
        let (code, answer) = self.call(system, country, reqwest::Method::POST, &format!("/v1/inbox/{packet_id}/status"), Some(&body)).await?;
        if code != 202 {
            return Err(step_failed(format!("reporting {status}: HTTP {code} {answer}")));
        }
        Ok(())
    }

    async fn assisted_voluntary_return(&self) -> Result<(), DemoError> {
        self.say(
            "1. Assisted voluntary return, Italy -> the Gambia. IOM Rome hands a returnee (a rejected asylum seeker) over to IOM Banjul, \
             which takes over case management on acceptance.",
        );
        let (status, answer) = self.submit("rejected_asylum_avr", "gmb-iom-banjul", "demo-avr-000001", true).await?;
        if status != 202 {
            return Err(step_failed(format!("the return referral was not accepted: HTTP {status} {answer}")));
        }
        let id = at(&answer, "/referral_id").as_str().unwrap_or_default().to_owned();
        let sent = keys(at(&answer, "/decision/sent"));
        let withheld = keys(at(&answer, "/decision/withheld"));
        println!("   Italy decided: send {} ; withhold {} (consent, purpose baseline, DPO policy).", sent.join(", "), withheld.join(", "));
        let referral = self.wait_for_status(&id, ReferralStatus::Delivered).await?;
        println!("   Sealed (JWS in JWE), sent over mutual TLS; the Gambian gateway's signed receipt is kept ({} bytes).", at(&referral, "/delivery/receipt").as_str().map_or(0, str::len));
        let items = self.inbox("iom-banjul", "GMB", 1).await?;
        let packet_id = items.first().and_then(|i| at(i, "/packet_id").as_str()).unwrap_or_default().to_owned();
        let (_, case) = self.call("iom-banjul", "GMB", reqwest::Method::GET, &format!("/v1/inbox/{packet_id}"), None).await?;
        let gambia = self.gateway("GMB")?.app.gateway();
        let held = routing_view(gambia, &packet_id).await.map_err(step_failed)?.ok_or_else(|| step_failed("the Gambian gateway holds no such packet"))?;
        println!("   IOM Banjul publishes its own key, so the case was sealed to it inside the gateways' envelope (an asylum-linked case to its origin state must be).");
        println!("   What the Gambian gateway holds for it, opened with all of its own keys: {held}");
        let key = DecryptionKey::from_jwk(&self.files.recipient_key).map_err(step_failed)?;
        let organisation = crate::domain::OrgId::parse(setup::SEALED_RECIPIENT).map_err(step_failed)?;
        // As a national system does: the library checks the gateway's signature and that the envelope is this packet's.
        let opened = crate::recipient::open_delivered(&case.to_string(), std::slice::from_ref(&key), gambia.directory().as_ref(), &organisation, self.clock.now())
            .map_err(step_failed)?;
        let categories = keys(&opened.content.body);
        println!("   IOM Banjul pulled it and opened it with its key (the sending gateway's signature checked): categories {}.", categories.join(", "));
        self.acknowledge("iom-banjul", "GMB", &packet_id).await?;
        self.wait_for_status(&id, ReferralStatus::Forwarded).await?;
        // Accepting a handover moves case management: the timeline says so.
        for (progress, reason, shown) in [
            ("accepted", None, ReferralStatus::Handover),
            ("arrived", None, ReferralStatus::Arrived),
            ("services_delivered", None, ReferralStatus::ServicesDelivered),
            ("closed", Some("reintegration_completed"), ReferralStatus::Closed),
        ] {
            self.report("iom-banjul", "GMB", &packet_id, progress, reason).await?;
            self.wait_for_status(&id, shown).await?;
        }
        let referral = self.referral(&id).await?;
        let timeline: Vec<String> = at(&referral, "/timeline").as_array().map(|t| t.iter().filter_map(|e| at(e, "/status").as_str().map(str::to_owned)).collect()).unwrap_or_default();
        println!("   IOM Rome follows it in Italy's API: {}.", timeline.join(" -> "));
        Ok(())
    }

    async fn asylum_firewall(&self) -> Result<(), DemoError> {
        self.say("2. The asylum firewall. The same person's case, addressed to the Gambian immigration department (an official of the state of origin).");
        let (status, answer) = self.submit("rejected_asylum_avr", "gmb-immigration", "demo-firewall-01", false).await?;
        let reasons: Vec<String> = at(&answer, "/reason_codes").as_array().map(|r| r.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect()).unwrap_or_default();
        if status != 422 || !reasons.iter().any(|r| r == "asylum_firewall") {
            return Err(step_failed(format!("expected a 422 with asylum_firewall, got HTTP {status} {reasons:?}")));
        }
        println!("   Refused in Italy before anything left: HTTP 422, reasons {}.", reasons.join(", "));
        let items = self.inbox("gmb-immigration", "GMB", 0).await?;
        if !items.is_empty() {
            return Err(step_failed("the immigration department's inbox is not empty"));
        }
        println!("   The immigration department's inbox at the Gambian gateway: empty. IOM Banjul (step 1) got only what consent and policy allow.");
        Ok(())
    }

    /// Returns the tracing request's id and its packet id at the Guinean gateway.
    async fn family_tracing(&self) -> Result<(String, String), DemoError> {
        self.say("3. Family tracing, Italy -> Guinea. The Italian Red Cross asks the Guinean Red Cross to trace an unaccompanied girl's mother.");
        let (status, answer) = self.submit_by(ITALIAN_RED_CROSS, "unaccompanied_girl_tracing", "gin-red-cross", "demo-tracing-001", false).await?;
        if status != 202 {
            return Err(step_failed(format!("the tracing request was not accepted: HTTP {status} {answer}")));
        }
        let id = at(&answer, "/referral_id").as_str().unwrap_or_default().to_owned();
        self.wait_for_status_of(ITALIAN_RED_CROSS, &id, ReferralStatus::Delivered).await?;
        let items = self.inbox("gin-red-cross", "GIN", 1).await?;
        let packet_id = items.first().and_then(|i| at(i, "/packet_id").as_str()).unwrap_or_default().to_owned();
        self.acknowledge("gin-red-cross", "GIN", &packet_id).await?;
        self.report("gin-red-cross", "GIN", &packet_id, "in_progress", None).await?;
        self.wait_for_status_of(ITALIAN_RED_CROSS, &id, ReferralStatus::InProgress).await?;
        println!("   The Guinean Red Cross took the request and is searching: Italy shows it in_progress.");
        Ok((id, packet_id))
    }

    /// The mother's own search in Guinea meets the girl's in Italy, neither
    /// gateway showing the other a name; the Guinean Red Cross then answers
    /// the girl's request with the mother's case, under her consent, and
    /// closes it.
    async fn searches_meet(&self, (id, packet_id): &(String, String)) -> Result<(), DemoError> {
        self.say(
            "4. Two searches meet. In Conakry a mother asks the Guinean Red Cross to find her daughter, who left for Italy; \
             her search goes to the Italian Red Cross. Guinea's gateway asks Italy's whether a search there meets hers.",
        );
        let (status, answer) = self.call(GUINEAN_RED_CROSS_DESK, "GIN", reqwest::Method::POST, "/v1/referrals", Some(&family::mothers_search(self.clock.now()))).await?;
        if status != 202 {
            return Err(step_failed(format!("the mother's search was not accepted: HTTP {status} {answer}")));
        }
        let mothers = at(&answer, "/referral_id").as_str().unwrap_or_default().to_owned();
        let ask = json!({ "gateways": ["ITA"] });
        let (code, report) = self.call(GUINEAN_RED_CROSS_DESK, "GIN", reqwest::Method::POST, &format!("/v1/referrals/{mothers}/matches"), Some(&ask)).await?;
        let found = at(&report, "/asked/0/matches").as_array().cloned().unwrap_or_default();
        let [found] = found.as_slice() else {
            return Err(step_failed(format!("asking Italy: HTTP {code} {report}")));
        };
        if code != 200 || at(&report, "/asked/0/outcome") != "answered" {
            return Err(step_failed(format!("asking Italy: HTTP {code} {report}")));
        }
        let handle = at(found, "/handle").as_str().unwrap_or_default().to_owned();
        println!(
            "   Guinea's query held its search's match keys (name parts, their sounds, the whole names, with year and sex tags) blinded. \
             Italy answered with an entry for every open search it holds, each under a fresh handle: its keys through Italy's match function, \
             salted with the handle, for the searches it may show the Guinean Red Cross; random bytes of the same size for the others; \
             padded to a power of two. Guinea's own evaluation found one: the daughter sought agrees with its subject in {} families of keys, \
             and the mother with the relative it seeks in {}. Neither the query nor the answer carried a name.",
            at(found, "/sought_found"),
            at(found, "/subject_sought"),
        );
        let italy = self.wait_for_entry(ITALIAN_RED_CROSS, "ITA", id, "match_found").await?;
        let guinea = self.wait_for_entry(GUINEAN_RED_CROSS_DESK, "GIN", &mothers, "match_found").await?;
        if !guinea.contains(&handle) || !italy.contains("matched_by:GIN") {
            return Err(step_failed(format!("the match is not on both timelines: Guinea {guinea}; Italy {italy}")));
        }
        println!(
            "   Each tracing officer gets a handle to the other's case, as codes, to verify the two are one family. \
             Guinea's search: match_found {guinea}; Italy's: match_found {italy}."
        );

        println!("   The Guinean Red Cross answers Italy's request with a tracing reply: the mother's case, under her consent to be put in touch with the Italian Red Cross.");
        let case = self.answered_in_italy(packet_id, id, &family::mothers_reply(self.clock.now()), 1).await?;
        let categories = keys(at(&case, "/case"));
        println!(
            "   It is in the Italian Red Cross's inbox as the answer to its request (answers_referral), purpose {}: categories {}.",
            at(&case, "/purpose"),
            categories.join(", ")
        );
        self.report("gin-red-cross", "GIN", packet_id, "closed", Some("family_traced")).await?;
        let referral = self.wait_for_status_of(ITALIAN_RED_CROSS, id, ReferralStatus::Closed).await?;
        let last = at(&referral, "/timeline").as_array().and_then(|t| t.last()).cloned().unwrap_or(Value::Null);
        println!("   The Red Cross closed the request: {} with reason {} (codes only: no free text crosses the border).", at(&last, "/status"), at(&last, "/reason_codes"));
        Ok(())
    }

    /// Before the best-interests determination: the Italian Red Cross asks,
    /// for the girl's guardian, that the Guinean Red Cross assess the
    /// mother's household; the assessment comes back under her consent.
    async fn family_assessment(&self) -> Result<(), DemoError> {
        self.say(
            "5. The family assessed. Before the best-interests determination, the Italian Red Cross asks, for the girl's guardian, \
             that the Guinean Red Cross assess the mother's household.",
        );
        let request = family::assessment_request(self.clock.now()).map_err(step_failed)?;
        let (status, answer) = self.call(ITALIAN_RED_CROSS, "ITA", reqwest::Method::POST, "/v1/referrals", Some(&request)).await?;
        if status != 202 {
            return Err(step_failed(format!("the assessment request was not accepted: HTTP {status} {answer}")));
        }
        let id = at(&answer, "/referral_id").as_str().unwrap_or_default().to_owned();
        let sent = keys(at(&answer, "/decision/sent"));
        self.wait_for_status_of(ITALIAN_RED_CROSS, &id, ReferralStatus::Delivered).await?;
        let items = self.inbox("gin-red-cross", "GIN", 2).await?;
        let Some(packet_id) = items.iter().find(|i| at(i, "/purpose") == "family_assessment_request").and_then(|i| at(i, "/packet_id").as_str()) else {
            return Err(step_failed("the assessment request is not in the Guinean Red Cross's inbox"));
        };
        println!("   Delivered to the Guinean Red Cross, cut to what an assessment needs: {}.", sent.join(", "));
        self.acknowledge("gin-red-cross", "GIN", packet_id).await?;
        let case = self.answered_in_italy(packet_id, &id, &family::mothers_assessment(self.clock.now()), 2).await?;
        if at(&case, "/case/family_assessment").is_null() {
            return Err(step_failed("the assessment came back without one"));
        }
        let categories = keys(at(&case, "/case"));
        println!(
            "   The assessment came back, under the mother's consent, to the Italian Red Cross's inbox (answers_referral), purpose {}: \
             categories {} (household by relationship and year of birth, capacity to care, risks, recommendation; no names).",
            at(&case, "/purpose"),
            categories.join(", ")
        );
        self.report("gin-red-cross", "GIN", packet_id, "closed", Some("assessment_completed")).await?;
        self.wait_for_status_of(ITALIAN_RED_CROSS, &id, ReferralStatus::Closed).await?;
        Ok(())
    }

    /// The Guinean Red Cross answers the request `packet_id` in its inbox
    /// (Italy's referral `id`) with `reply`; the reply as the Italian Red
    /// Cross reads it, once its timeline shows it and its inbox (by then
    /// holding `inbox_count` cases) lists it as the answer to `id`.
    async fn answered_in_italy(&self, packet_id: &str, id: &str, reply: &Value, inbox_count: usize) -> Result<Value, DemoError> {
        let (code, answer) = self.call("gin-red-cross", "GIN", reqwest::Method::POST, &format!("/v1/inbox/{packet_id}/replies"), Some(reply)).await?;
        if code != 202 {
            return Err(step_failed(format!("the reply was not accepted: HTTP {code} {answer}")));
        }
        self.wait_for_entry(ITALIAN_RED_CROSS, "ITA", id, "reply_received").await?;
        let items = self.inbox(ITALIAN_RED_CROSS_INBOX, "ITA", inbox_count).await?;
        let Some(reply_packet) = items.iter().find(|i| at(i, "/answers_referral").as_str() == Some(id)).and_then(|i| at(i, "/packet_id").as_str()) else {
            return Err(step_failed("the reply is not in the Italian Red Cross's inbox"));
        };
        let (code, case) = self.call(ITALIAN_RED_CROSS_INBOX, "ITA", reqwest::Method::GET, &format!("/v1/inbox/{reply_packet}"), None).await?;
        if code != 200 || keys(at(&case, "/case")).is_empty() {
            return Err(step_failed(format!("reading the reply: HTTP {code}")));
        }
        Ok(case)
    }

    /// Waits until the timeline of a referral `system` sent from `country`
    /// has an entry of `status`; its reason codes, joined.
    async fn wait_for_entry(&self, system: &str, country: &str, id: &str, status: &str) -> Result<String, DemoError> {
        poll(async || {
            let referral = self.referral_of(system, country, id).await?;
            let entry = at(&referral, "/timeline").as_array().into_iter().flatten().find(|e| at(e, "/status") == status);
            Ok(match entry {
                Some(entry) => Ok(at(entry, "/reason_codes").as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect::<Vec<_>>().join(" ")),
                None => Err(format!("referral {id} has no {status} entry")),
            })
        })
        .await
    }

    async fn consent_withdrawn(&self, (id, packet_id): &(String, String)) -> Result<(), DemoError> {
        self.say("7. Consent withdrawn. The girl's guardian withdraws consent for the tracing request; Italy erases its copy and asks Guinea to erase theirs.");
        let (code, answer) = self.call(ITALIAN_RED_CROSS, "ITA", reqwest::Method::POST, &format!("/v1/referrals/{id}/consent-withdrawal"), Some(&json!({}))).await?;
        if code != 200 || at(&answer, "/peer_notified") != &json!(true) {
            return Err(step_failed(format!("withdrawing: HTTP {code} {answer}")));
        }
        println!("   Italy destroyed the case's own key (its payload is unreadable in every copy of its database) and sent a signed withdrawal.");
        self.wait_for_status_of(ITALIAN_RED_CROSS, id, ReferralStatus::ErasedAtGateway).await?;
        println!("   The Guinean gateway destroyed its key for the case and confirmed, signed: erased_at_gateway.");
        let items = self.inbox("gin-red-cross", "GIN", 1).await?;
        let listed = items.iter().find(|i| at(i, "/packet_id").as_str() == Some(packet_id.as_str())).map(|i| at(i, "/state").clone());
        let (read, _) = self.call("gin-red-cross", "GIN", reqwest::Method::GET, &format!("/v1/inbox/{packet_id}"), None).await?;
        if listed != Some(json!(InboxState::Erased)) || read != 410 {
            return Err(step_failed(format!("the Red Cross sees the case as {listed:?}, reading it gives HTTP {read}")));
        }
        println!("   The Red Cross's inbox lists the case as erased; reading it now answers HTTP 410.");
        let (code, _) = self.call("gin-red-cross", "GIN", reqwest::Method::POST, &format!("/v1/inbox/{packet_id}/erasure-confirmed"), None).await?;
        if code != 200 {
            return Err(step_failed(format!("confirming the erasure: HTTP {code}")));
        }
        let referral = self.wait_for_status_of(ITALIAN_RED_CROSS, id, ReferralStatus::ErasureConfirmed).await?;
        let timeline: Vec<String> = at(&referral, "/timeline").as_array().map(|t| t.iter().filter_map(|e| at(e, "/status").as_str().map(str::to_owned)).collect()).unwrap_or_default();
        println!("   The Red Cross erased its own copy and said so. Italy's timeline: {}; erasure {}.", timeline.join(" -> "), at(&referral, "/erasure/state"));
        Ok(())
    }

    async fn tampered_packet(&self) -> Result<(), DemoError> {
        self.say("6. A tampered packet. One character of a packet Italy sent is changed and the packet posted to the Gambian gateway again.");
        let ita = self.gateway("ITA")?;
        let gmb = self.gateway("GMB")?;
        let gateway = ita.app.gateway();
        let keys = gateway.federation_keys().ok_or_else(|| step_failed("Italy has no federation keys"))?;
        let (chain, key) = keys.tls_identity().map_err(step_failed)?;
        let members: Arc<dyn Members> = Arc::clone(gateway) as Arc<dyn Members>;
        let client = PeerClient::new(members, chain, key, Duration::from_secs(5));
        let packet = sent_packet(gateway.store.as_ref()).await?;
        let mut parts: Vec<String> = packet.split('.').map(str::to_owned).collect();
        let Some(ciphertext) = parts.get_mut(3) else { return Err(step_failed("the kept packet is not a compact JWE")) };
        let flipped = if ciphertext.starts_with('A') { 'B' } else { 'A' };
        ciphertext.replace_range(0..1, &flipped.to_string());
        let endpoint = format!("https://127.0.0.1:{}", gmb.federation_port());
        match client.send(gmb.country, &endpoint, &parts.join(".")).await {
            Err(refused @ SendFailure::Refused { .. }) if refused.known() == Some(FailureCode::PacketUndecryptable) => {
                println!("   Refused by the Gambian gateway: {} (the AES-GCM tag fails); the refusal is in its audit log.", refused.code());
                Ok(())
            }
            other => Err(step_failed(format!("the tampered packet was not refused as undecryptable: {other:?}"))),
        }
    }

    /// An emergency referral whose consent has lapsed, sent under an
    /// emergency override once a DPO other than the submitter approves it.
    async fn emergency_override(&self) -> Result<(), DemoError> {
        self.say(
            "8. An emergency without consent. A returnee needs an urgent medical escort home; his consent lapsed yesterday and he \
             cannot be reached. IOM Rome marks the referral emergency and asks for an override: life_threatening.",
        );
        let mut referral = fixtures::referral_as_of("rejected_asylum_avr", self.clock.now()).map_err(step_failed)?;
        let yesterday = (self.clock.now() - chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for scope in referral.pointer_mut("/consent/scopes").and_then(Value::as_array_mut).into_iter().flatten() {
            scope["valid_until"] = json!(yesterday);
        }
        let fields = referral.as_object_mut().ok_or_else(|| step_failed("the fixture is not a JSON object"))?;
        fields.insert("destination".to_owned(), json!("gmb-iom-banjul"));
        fields.insert("idempotency_key".to_owned(), json!("demo-emergency-01"));
        fields.insert("priority".to_owned(), json!("emergency"));
        fields.insert("override".to_owned(), json!({ "reason": "life_threatening", "justification_code": "medical_escort" }));
        let (status, answer) = self.call("iom-rome", "ITA", reqwest::Method::POST, "/v1/referrals", Some(&referral)).await?;
        if status != 202 || at(&answer, "/status") != "awaiting_override" {
            return Err(step_failed(format!("the emergency referral was not held for approval: HTTP {status} {answer}")));
        }
        let id = at(&answer, "/referral_id").as_str().unwrap_or_default().to_owned();
        let overridden: Vec<String> = at(&answer, "/override/overridden_categories").as_array().map(|c| c.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default();
        println!(
            "   Without consent it would be denied; under the override it may go, but only what a return needs ({}), never the asylum history \
             and never to an official of the Gambia. Held: {}, a DPO must approve by {}.",
            overridden.join(", "),
            at(&answer, "/status"),
            at(&answer, "/override/approve_by")
        );
        let (code, listed) = self.call("ita-dpo", "ITA", reqwest::Method::GET, "/v1/overrides", None).await?;
        if code != 200 || !at(&listed, "/items").as_array().is_some_and(|items| items.iter().any(|i| at(i, "/referral_id") == &json!(id))) {
            return Err(step_failed(format!("Italy's DPO does not see the override: HTTP {code}")));
        }
        let (code, decided) = self.call("ita-dpo", "ITA", reqwest::Method::POST, &format!("/v1/overrides/{id}/approve"), None).await?;
        if code != 200 || at(&decided, "/status") != "queued" {
            return Err(step_failed(format!("approving the override: HTTP {code} {decided}")));
        }
        println!("   Italy's DPO (not the submitter) reviewed the codes, never the case, and approved: {}.", at(&decided, "/override/state"));
        let referral = self.wait_for_status(&id, ReferralStatus::Delivered).await?;
        let timeline: Vec<String> = at(&referral, "/timeline").as_array().map(|t| t.iter().filter_map(|e| at(e, "/status").as_str().map(str::to_owned)).collect()).unwrap_or_default();
        println!(
            "   Timeline: {}. Priority {}: delivery within an hour, acknowledgement within four, an answer within a day. The subject \
             report shows the override.",
            timeline.join(" -> "),
            at(&referral, "/priority")
        );
        // Nobody at IOM Banjul acknowledges it: the federation's clock is moved five hours on.
        self.ahead.move_ahead(chrono::Duration::hours(5));
        let referral = self.referral(&id).await?;
        if at(&referral, "/overdue/deadline") != "acknowledgement" {
            return Err(step_failed(format!("the emergency is not shown overdue: {}", at(&referral, "/overdue"))));
        }
        let (code, listed) = self.call("iom-rome", "ITA", reqwest::Method::GET, "/v1/referrals?overdue=true&priority=emergency", None).await?;
        let listed = at(&listed, "/items").as_array().map_or(0, Vec::len);
        if code != 200 || listed == 0 {
            return Err(step_failed(format!("listing the overdue emergencies: HTTP {code}, {listed} listed")));
        }
        // The watch runs on its own every minute; here at once, so that the warning is in this run's log.
        self.gateway("ITA")?.app.gateway().warn_overdue_emergencies(crate::app::sending::deadlines::WARNINGS_PER_ROUND).await.map_err(step_failed)?;
        println!(
            "   Five hours on, IOM Banjul has not acknowledged it: the referral shows overdue {} since {}, IOM Rome's listing of overdue \
             emergencies holds it, the metrics count it, and Italy's gateway logs a warning naming only its id.",
            at(&referral, "/overdue/deadline"),
            at(&referral, "/overdue/since")
        );
        Ok(())
    }

    /// Both DPOs of `country`'s gateway adopt the shipped policy plus a
    /// `refer_onward` permit: one uploads, the other signs off.
    async fn adopt_onward_permit(&self, country: &str, (author, reviewer): (&str, &str)) -> Result<(), DemoError> {
        let shipped = crate::policy_files::read_sources(std::path::Path::new("config/policies")).map_err(step_failed)?;
        let mut files: std::collections::BTreeMap<String, String> = shipped.into_iter().map(|source| (source.name, source.text)).collect();
        files.insert("30-onward.cedar".to_owned(), ONWARD_PERMIT.to_owned());
        let (code, stored) = self.call(author, country, reqwest::Method::PUT, "/v1/policies", Some(&json!({ "files": files }))).await?;
        let number = at(&stored, "/number").as_i64().unwrap_or_default();
        if code != 201 {
            return Err(step_failed(format!("{country}: storing the onward permit: HTTP {code} {stored}")));
        }
        let (code, approved) = self.call(reviewer, country, reqwest::Method::POST, &format!("/v1/policies/{number}/approve"), Some(&json!({}))).await?;
        if code != 200 {
            return Err(step_failed(format!("{country}: approving the onward permit: HTTP {code} {approved}")));
        }
        Ok(())
    }

    /// A reintegration referral to a health centre in the Gambia, which
    /// passes part of it on to an NGO there, tries to pass it to a
    /// government department (outside what Italy's DPO permits), and loses
    /// its copy, and the NGO its own, when the person withdraws consent.
    async fn onward_referral(&self) -> Result<(), DemoError> {
        self.say(
            "9. Onward referral in the country of return. A Gambian returnee living with HIV goes home; the health centre in Banjul \
             continues his treatment and, as he agreed, may pass his case on to NGOs and social welfare for his reintegration. Both \
             countries' DPOs adopt a refer_onward permit (to organisations that are not state actors), each signed off by a second DPO.",
        );
        self.adopt_onward_permit("ITA", ("ita-dpo", "ita-dpo-2")).await?;
        self.adopt_onward_permit("GMB", ("gmb-dpo", "gmb-dpo-2")).await?;
        // The returnee of the fixture, going home to the Gambia instead.
        let mut referral = fixtures::referral_as_of("returnee_hiv_reintegration", self.clock.now()).map_err(step_failed)?;
        for pointer in ["/case/identity/place_of_birth/country", "/case/identity/former_habitual_residence/country", "/case/return_logistics/destination/country"] {
            if let Some(country) = referral.pointer_mut(pointer) {
                *country = json!("GMB");
            }
        }
        if let Some(identity) = referral.pointer_mut("/case/identity") {
            identity["nationalities"] = json!(["GMB"]);
        }
        if let Some(scope) = referral.pointer_mut("/consent/scopes/0") {
            scope["recipients"] = json!([{ "kind": "health_provider", "country": "GMB" }]);
            scope["onward"] = json!({ "recipient_kinds": ["ngo", "social_welfare"] });
        }
        let fields = referral.as_object_mut().ok_or_else(|| step_failed("the fixture is not a JSON object"))?;
        fields.insert("destination".to_owned(), json!("gmb-health-banjul"));
        fields.insert("idempotency_key".to_owned(), json!("demo-onward-0001"));
        let (status, answer) = self.call("iom-rome", "ITA", reqwest::Method::POST, "/v1/referrals", Some(&referral)).await?;
        if status != 202 {
            return Err(step_failed(format!("the reintegration referral was not accepted: HTTP {status} {answer}")));
        }
        let id = at(&answer, "/referral_id").as_str().unwrap_or_default().to_owned();
        self.wait_for_status(&id, ReferralStatus::Delivered).await?;
        let items = self.inbox("gmb-health-banjul", "GMB", 1).await?;
        let packet_id = items.first().and_then(|i| at(i, "/packet_id").as_str()).unwrap_or_default().to_owned();
        let (_, case) = self.call("gmb-health-banjul", "GMB", reqwest::Method::GET, &format!("/v1/inbox/{packet_id}"), None).await?;
        let kinds: Vec<String> = at(&case, "/onward/grants").as_array().into_iter().flatten().flat_map(|g| at(g, "/recipient_kinds").as_array().cloned().unwrap_or_default()).filter_map(|k| k.as_str().map(str::to_owned)).collect();
        println!(
            "   The case came with onward limits decided in Italy: to {} only (social welfare is a state body: Italy's DPO permits none).",
            kinds.join(", ")
        );
        let refer = |to: &str, categories: Value| json!({ "recipient": to, "purpose": "reintegration", "categories": categories });
        let path = format!("/v1/inbox/{packet_id}/refer-onward");
        let (code, refused) = self.call("gmb-health-banjul", "GMB", reqwest::Method::POST, &path, Some(&refer("gmb-social-welfare", json!(["identity"])))).await?;
        if code != 422 {
            return Err(step_failed(format!("passing the case to social welfare: HTTP {code} {refused}")));
        }
        println!("   The centre asks to pass it to the Department of Social Welfare: refused by the Gambian gateway, {}.", at(&refused, "/reason_code"));
        let (code, passed) = self.call("gmb-health-banjul", "GMB", reqwest::Method::POST, &path, Some(&refer("gmb-returnee-ngo", json!(["identity", "contact"])))).await?;
        if code != 201 {
            return Err(step_failed(format!("passing the case to the NGO: HTTP {code} {passed}")));
        }
        let copy_id = at(&passed, "/packet_id").as_str().unwrap_or_default().to_owned();
        let categories: Vec<String> = at(&passed, "/categories").as_array().into_iter().flatten().filter_map(|c| c.as_str().map(str::to_owned)).collect();
        println!(
            "   To the reintegration NGO in Banjul: passed on, {} only (never his health), cut to what reintegration needs; a case of its own in the NGO's inbox.",
            categories.join(", ")
        );
        self.inbox("gmb-returnee-ngo", "GMB", 1).await?;
        let (code, _) = self.call("gmb-returnee-ngo", "GMB", reqwest::Method::POST, &format!("/v1/inbox/{copy_id}/status"), Some(&json!({ "status": "accepted" }))).await?;
        if code != 202 {
            return Err(step_failed(format!("the NGO's answer: HTTP {code}")));
        }
        let onward = self.wait_for_onward(&id, &["onward_1", "ngo", "accepted"]).await?;
        println!("   Italy follows it as codes, never the NGO's name: {}.", onward.join(" ; "));
        let (code, answer) = self.call("iom-rome", "ITA", reqwest::Method::POST, &format!("/v1/referrals/{id}/consent-withdrawal"), Some(&json!({}))).await?;
        if code != 200 {
            return Err(step_failed(format!("withdrawing: HTTP {code} {answer}")));
        }
        poll(async || {
            let (read, _) = self.call("gmb-returnee-ngo", "GMB", reqwest::Method::GET, &format!("/v1/inbox/{copy_id}"), None).await?;
            Ok(if read == 410 { Ok(()) } else { Err(format!("the NGO's copy still answers HTTP {read}")) })
        })
        .await?;
        let (code, _) = self.call("gmb-returnee-ngo", "GMB", reqwest::Method::POST, &format!("/v1/inbox/{copy_id}/erasure-confirmed"), None).await?;
        if code != 200 {
            return Err(step_failed(format!("the NGO's confirmation: HTTP {code}")));
        }
        self.wait_for_onward(&id, &["onward_1", "ngo", "erasure_confirmed"]).await?;
        println!(
            "   The returnee withdraws his consent: the Gambian gateway erases the centre's case and the NGO's copy together; \
             the NGO confirms, and Italy's timeline shows it: onward_1 ngo erasure_confirmed."
        );
        Ok(())
    }

    /// The `onward` entries of a referral's timeline once one has `codes`.
    async fn wait_for_onward(&self, id: &str, codes: &[&str]) -> Result<Vec<String>, DemoError> {
        poll(async || {
            let referral = self.referral(id).await?;
            let entries: Vec<Vec<String>> = at(&referral, "/timeline")
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| at(e, "/status") == "onward")
                .map(|e| at(e, "/reason_codes").as_array().into_iter().flatten().filter_map(|c| c.as_str().map(str::to_owned)).collect())
                .collect();
            Ok(if entries.iter().any(|entry| entry == codes) {
                Ok(entries.iter().map(|e| e.join(" ")).collect())
            } else {
                Err(format!("Italy's timeline has no onward entry {codes:?}: {entries:?}"))
            })
        })
        .await
    }

    async fn audit_chains(&self) -> Result<(), DemoError> {
        self.say("10. The audit chains. Every gateway's hash chain is recomputed from its first entry.");
        for gateway in &self.gateways {
            match crate::store::verify_audit_chain(gateway.app.gateway().store.as_ref()).await.map_err(step_failed)? {
                Ok(chain) => println!("   {}: {} entries, intact (head {}).", gateway.country, chain.entries, chain.head.get(..16).unwrap_or_default()),
                Err(broken) => return Err(step_failed(format!("{}: {broken}", gateway.country))),
            }
        }
        Ok(())
    }

    fn explore_hints(&self) -> Result<(), DemoError> {
        // The fixtures moved to today, as the demo submits them: as written they may be past their consents.
        let moved = self.files.root.join("referrals");
        fixtures::write_moved(&moved, self.clock.now()).map_err(step_failed)?;
        let referral_file = moved.join("returnee_hiv_reintegration.json");
        let curl = |name: &str| {
            format!("curl --cacert {} --cert {}", self.files.pki.ca.display(), self.files.client_pem(name).map(|p| p.display().to_string()).unwrap_or_default())
        };
        let url = |country: &str| self.gateway(country).map(|g| format!("https://localhost:{}", g.app.local_addr().port())).unwrap_or_default();
        println!(
            "\nThe federation stays up (files in {}). Explore, then stop with Ctrl-C:\n\
             Submit a referral as IOM Rome:\n  {} -H 'content-type: application/json' \\\n    \
             --data @{} {}/v1/referrals\n\
             Follow it (referral_id from the answer):\n  {} {}/v1/referrals/<referral_id>\n\
             Italy's audit log (as the auditor):\n  {} '{}/v1/audit?limit=5'\n\
             Who received what about a person (as Italy's DPO):\n  {} '{}/v1/disclosures?subject_ref=ITA-2026-000303'\n\
             Italy's statistics of the last closed month (as the coordinating body):\n  {} '{}/v1/statistics?period={}'\n\
             Italy's console for DPOs and auditors, in a browser: {}/console/\n  \
             sign in with the DPO's client certificate: make a PKCS#12 file of it\n  \
             openssl pkcs12 -export -in {} -out {} -passout pass:demo\n  \
             import that into the browser (password: demo), trust {} as an authority, and choose \"Sign in with the client certificate\"\n\
             IOM Banjul's inbox in the Gambia:\n  {} {}/v1/inbox\n\
             The Guinean Red Cross's inbox:\n  {} {}/v1/inbox\n\
             The Italian Red Cross's inbox (the mother's search, her reply and the assessment, steps 4 and 5):\n  {} {}/v1/inbox",
            self.files.root.display(),
            curl("iom-rome"),
            referral_file.display(),
            url("ITA"),
            curl("iom-rome"),
            url("ITA"),
            curl("ita-auditor"),
            url("ITA"),
            curl("ita-dpo"),
            url("ITA"),
            curl("ita-statistics"),
            url("ITA"),
            crate::domain::statistics::Period::last_closed(false, self.clock.now()),
            url("ITA"),
            self.files.client_pem("ita-dpo").map(|p| p.display().to_string()).unwrap_or_default(),
            self.files.root.join("ita-dpo.p12").display(),
            self.files.pki.ca.display(),
            curl("iom-banjul"),
            url("GMB"),
            curl("gin-red-cross"),
            url("GIN"),
            curl(ITALIAN_RED_CROSS_INBOX),
            url("ITA"),
        );
        Ok(())
    }
}

/// The member names of a JSON object (a case's categories, a decision's); none for anything else.
fn keys(value: &Value) -> Vec<String> {
    value.as_object().map(|members| members.keys().cloned().collect()).unwrap_or_default()
}

/// The value at a JSON pointer, `null` when absent.
fn at<'v>(value: &'v Value, pointer: &str) -> &'v Value {
    value.pointer(pointer).unwrap_or(&Value::Null)
}

/// A packet Italy sent and kept (its first delivered referral's).
async fn sent_packet(store: &dyn crate::store::Store) -> Result<String, DemoError> {
    let claimed = store.audit(&crate::store::AuditFilter { action: Some("packet.send".to_owned()), limit: 1, ..Default::default() }).await.map_err(step_failed)?;
    let referral_id = claimed.first().and_then(|r| r.referral_id.clone()).ok_or_else(|| step_failed("Italy has sent nothing"))?;
    store.delivery(&referral_id).await.map_err(step_failed)?.and_then(|d| d.packet).ok_or_else(|| step_failed("no packet kept for the referral"))
}

/// What this gateway holds of a received packet, as its own operators
/// could read it with every key it has: its row's routing facts and its
/// stored claims, an end-to-end envelope shown only by its size. `None`
/// for an unknown packet. Shown by the demo; not an API route.
async fn routing_view(gateway: &crate::app::Gateway, packet_id: &str) -> Result<Option<Value>, crate::app::AppError> {
    let Some(item) = gateway.store.inbox_item(packet_id).await? else {
        return Ok(None);
    };
    let mut claims = serde_json::to_value(gateway.opened_claims(&item).await?).map_err(|e| crate::app::AppError::Internal(e.to_string()))?;
    if let Some(sealed) = claims.get_mut("end_to_end") {
        let size = sealed.as_str().map_or(0, str::len);
        *sealed = json!(format!("<{size} bytes sealed to the organisation>"));
    }
    Ok(Some(json!({
        "row": { "packet_id": item.packet_id, "issuer": item.issuer, "type": item.packet_type, "recipient": item.recipient_org, "state": item.state },
        "claims": claims,
    })))
}
