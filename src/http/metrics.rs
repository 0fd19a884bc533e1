//! Prometheus metrics. Labels are route templates, methods, status codes,
//! outcomes, reason codes, peer gateways' country codes and failure causes
//! from a closed list: never an id, a reference or a value.

use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::extract::ConnectionInfo;
use super::AppState;
use crate::app::sending::delivery_observer::{DeliveryObserver, ObservedPeer};
use crate::app::retention::ErasedCounts;
use crate::app::sending::callbacks::CallbackBacklog;
use crate::app::sending::deadlines::OverdueCount;
use crate::app::Gateway;
use crate::domain::CountryCode;
use crate::federation::tls::Members;

/// What the gauges show, read at each scrape.
#[derive(Debug, Clone, Copy)]
pub struct GaugesNow<'a> {
    /// `-1` when the store could not count it, as every count read from it.
    pub outbox_depth: i64,
    pub erased: ErasedCounts,
    pub agreements_due: &'a [crate::domain::policy::agreements::Due],
    /// `None` when the store could not count them: each series then `-1`.
    pub overdue: Option<&'a [OverdueCount]>,
    pub callbacks: &'a [CallbackBacklog],
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabels {
    side: &'static str,
}

/// Why a sharing agreement of a permit in force is due (`agreements::Due`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DueLabels {
    due: &'static str,
}

/// Overdue referrals: a priority and a deadline (closed lists).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverdueLabels {
    priority: &'static str,
    deadline: &'static str,
}

/// An organisation with a status callback (from the configuration: a closed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrganisationLabels {
    organisation: String,
}

/// A peer gateway: its country code, from the directory (a closed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    peer: String,
    /// One of `wire::FailureCode`, or `other`.
    cause: &'static str,
}

/// Delivery to peer gateways, per peer.
#[derive(Debug)]
struct DeliveryMetrics {
    attempts: Family<PeerLabels, Counter>,
    retries: Family<PeerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    time_to_deliver: Family<PeerLabels, Histogram>,
    expiries: Family<PeerLabels, Counter>,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    decisions: Family<OutcomeLabels, Counter>,
    deny_reasons: Family<ReasonLabels, Counter>,
    outbox_depth: Gauge,
    retention_erasures: Family<SideLabels, Counter>,
    agreements_due: Family<DueLabels, Gauge>,
    overdue: Family<OverdueLabels, Gauge>,
    callbacks_pending: Family<OrganisationLabels, Gauge>,
    callbacks_failed: Family<OrganisationLabels, Gauge>,
    delivery: DeliveryMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rgw");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 14)));
        let decisions = Family::<OutcomeLabels, Counter>::default();
        let deny_reasons = Family::<ReasonLabels, Counter>::default();
        let outbox_depth = Gauge::default();
        let retention_erasures = Family::<SideLabels, Counter>::default();
        let agreements_due = Family::<DueLabels, Gauge>::default();
        let overdue = Family::<OverdueLabels, Gauge>::default();
        let callbacks_pending = Family::<OrganisationLabels, Gauge>::default();
        let callbacks_failed = Family::<OrganisationLabels, Gauge>::default();
        registry.register(
            "callbacks_pending",
            "Status callback events waiting for the organisation's 2xx (retried with backoff), by organisation; -1 if the store could not count them",
            callbacks_pending.clone(),
        );
        registry.register(
            "callbacks_failed",
            "Status callback events given up at their deadline ([callbacks.<name>] retry_hours), by organisation; -1 if the store could not count them",
            callbacks_failed.clone(),
        );
        registry.register(
            "referrals_overdue",
            "Referrals sent from here past the deadline they await ([deadlines]), by priority and deadline (delivery, acknowledgement, first_status)",
            overdue.clone(),
        );
        registry.register(
            "policy_agreements_due",
            "Permits of the policy version in force whose sharing agreement is to be reviewed or expires within 30 days, or expired, by why",
            agreements_due.clone(),
        );
        registry.register("http_requests", "HTTP requests by method, route template and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route template", latency.clone());
        registry.register("decisions", "Referral decisions by outcome", decisions.clone());
        registry.register("deny_reasons", "Reason codes of denied referrals", deny_reasons.clone());
        registry.register("outbox_depth", "Packets (referrals and statuses) waiting for delivery to a peer gateway", outbox_depth.clone());
        registry.register(
            "retention_erasures",
            "Cases erased because their retention deadline passed, by side: sent (referrals sent from here) or received",
            retention_erasures.clone(),
        );
        // From a tenth of a second, by fourfold steps, to about five days:
        // delivery takes well under a second to a live peer, and up to the
        // delivery window (seven days by default) to one that was down.
        let delivery = DeliveryMetrics {
            attempts: Family::default(),
            retries: Family::default(),
            failures: Family::default(),
            time_to_deliver: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.1, 4.0, 12))),
            expiries: Family::default(),
        };
        registry.register(
            "delivery_attempts",
            "Delivery attempts to a peer gateway (first attempts and retries), by peer",
            delivery.attempts.clone(),
        );
        registry.register("delivery_retries", "Delivery attempts that were not an entry's first, by peer", delivery.retries.clone());
        registry.register(
            "delivery_failures",
            "Failed delivery attempts by peer and cause (the failure code; `other` for a code the gateway does not know)",
            delivery.failures.clone(),
        );
        registry.register(
            "delivery_time_to_deliver_seconds",
            "From an outbox entry's creation to the peer's verified receipt, by peer",
            delivery.time_to_deliver.clone(),
        );
        registry.register(
            "delivery_expiries",
            "Outbox entries whose deadline passed before they were delivered, by peer",
            delivery.expiries.clone(),
        );
        Self { registry: Mutex::new(registry), requests, latency, decisions, deny_reasons, outbox_depth, retention_erasures, agreements_due, overdue, callbacks_pending, callbacks_failed, delivery }
    }

    pub fn decision(&self, allowed: bool, reasons: &[String]) {
        let outcome = if allowed { "allow" } else { "deny" };
        self.decisions.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
        for reason in reasons {
            self.deny_reasons.get_or_create(&ReasonLabels { reason: reason.clone() }).inc();
        }
    }

    /// The OpenMetrics text exposition, with the gauges as of now, and the
    /// retention erasures the gateway counted since it started.
    pub fn render(&self, now: &GaugesNow<'_>) -> String {
        use crate::domain::policy::agreements::Due;
        use crate::domain::priority::{DeadlineKind, Priority};
        let GaugesNow { outbox_depth, erased, agreements_due, overdue, callbacks } = *now;
        self.outbox_depth.set(outbox_depth);
        for backlog in callbacks {
            let labels = OrganisationLabels { organisation: backlog.org.clone() };
            self.callbacks_pending.get_or_create(&labels).set(backlog.pending);
            self.callbacks_failed.get_or_create(&labels).set(backlog.failed);
        }
        for priority in Priority::ALL {
            for deadline in DeadlineKind::ALL {
                let count = match overdue {
                    Some(counts) => counts.iter().filter(|c| c.priority == *priority && c.deadline == *deadline).map(|c| c.count).sum(),
                    None => -1,
                };
                self.overdue.get_or_create(&OverdueLabels { priority: priority.as_str(), deadline: deadline.as_str() }).set(count);
            }
        }
        for (due, label) in [(Due::Review, "review"), (Due::Expires, "expires"), (Due::Expired, "expired")] {
            let count = agreements_due.iter().filter(|d| **d == due).count();
            self.agreements_due.get_or_create(&DueLabels { due: label }).set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        let registry = match self.registry.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // The gateway counts (the sweep runs without a request); the counters
        // catch up here, under the lock, so two renders never add twice.
        for (side, total) in [("sent", erased.sent), ("received", erased.received)] {
            let counter = self.retention_erasures.get_or_create(&SideLabels { side });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The national API (`server.listen`).
    Api,
    /// Member gateways (`federation.listen`).
    Federation,
}

impl Listener {
    fn as_str(self) -> &'static str {
        match self {
            Listener::Api => "api",
            Listener::Federation => "federation",
        }
    }
}

/// Counts every request of the national API by its route template (`/v1/referrals/{id}`, never the id).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    tracked(&state.metrics, Listener::Api, None, request, next).await
}

/// What the federation listener's requests are counted with: the metrics,
/// and the gateway, which tells a connection's member from its certificate.
#[derive(Clone)]
pub struct FederationTracking {
    pub metrics: Arc<Metrics>,
    pub gateway: Arc<Gateway>,
}

/// Counts and logs every request on the federation listener as [`track`]
/// does the national API's, with the member gateway that sent it.
pub async fn track_federation(State(tracking): State<FederationTracking>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectionInfo>()
        .and_then(|connection| connection.spki_pin.as_deref())
        .and_then(|pin| tracking.gateway.active_member_by_pin(pin));
    tracked(&tracking.metrics, Listener::Federation, peer, request, next).await
}

/// One `request` line and the request series, for either listener: ids
/// (the route template, the peer's country) and outcomes only.
async fn tracked(metrics: &Metrics, listener: Listener, peer: Option<CountryCode>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    // Only the methods HTTP defines: a client may send any token as a method,
    // and each distinct label value would live in memory for good.
    let method = match *request.method() {
        Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::HEAD | Method::OPTIONS | Method::PATCH => {
            request.method().as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let listener = listener.as_str();
    match peer {
        Some(peer) => tracing::info!(listener, %method, %route, status, elapsed_ms, %peer, "request"),
        None => tracing::info!(listener, %method, %route, status, elapsed_ms, "request"),
    }
    metrics.requests.get_or_create(&RequestLabels { method, route: route.clone(), status }).inc();
    metrics.latency.get_or_create(&RouteLabels { route }).observe(started.elapsed().as_secs_f64());
    response
}

impl DeliveryObserver for Metrics {
    fn attempted(&self, peer: ObservedPeer, retry: bool) {
        let labels = PeerLabels { peer: peer_label(peer) };
        self.delivery.attempts.get_or_create(&labels).inc();
        if retry {
            self.delivery.retries.get_or_create(&labels).inc();
        }
    }

    fn failed(&self, peer: ObservedPeer, cause: &'static str) {
        self.delivery.failures.get_or_create(&FailureLabels { peer: peer_label(peer), cause }).inc();
    }

    fn delivered(&self, peer: ObservedPeer, after: std::time::Duration) {
        self.delivery.time_to_deliver.get_or_create(&PeerLabels { peer: peer_label(peer) }).observe(after.as_secs_f64());
    }

    fn expired(&self, peer: ObservedPeer) {
        self.delivery.expiries.get_or_create(&PeerLabels { peer: peer_label(peer) }).inc();
    }
}

/// The `peer` label: the country code, or `withheld`.
fn peer_label(peer: ObservedPeer) -> String {
    match peer {
        ObservedPeer::Gateway(country) => country.to_string(),
        ObservedPeer::Withheld => "withheld".to_owned(),
    }
}
