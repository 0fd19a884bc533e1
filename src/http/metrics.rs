//! Prometheus metrics. Labels are route templates, methods, status codes,
//! outcomes and reason codes: never an id, a reference or a value.

use std::sync::Mutex;

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

use super::AppState;
use crate::app::retention::ErasedCounts;

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

#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    decisions: Family<OutcomeLabels, Counter>,
    deny_reasons: Family<ReasonLabels, Counter>,
    outbox_depth: Gauge,
    retention_erasures: Family<SideLabels, Counter>,
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
        Self { registry: Mutex::new(registry), requests, latency, decisions, deny_reasons, outbox_depth, retention_erasures }
    }

    pub fn decision(&self, allowed: bool, reasons: &[String]) {
        let outcome = if allowed { "allow" } else { "deny" };
        self.decisions.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
        for reason in reasons {
            self.deny_reasons.get_or_create(&ReasonLabels { reason: reason.clone() }).inc();
        }
    }

    /// The OpenMetrics text exposition, with the outbox depth as of now and
    /// the retention erasures the gateway counted since it started.
    pub fn render(&self, outbox_depth: i64, erased: ErasedCounts) -> String {
        self.outbox_depth.set(outbox_depth);
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

/// Counts every request by its route template (`/v1/referrals/{id}`, never the id).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
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
    tracing::info!(%method, %route, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    state.metrics.requests.get_or_create(&RequestLabels { method, route: route.clone(), status }).inc();
    state.metrics.latency.get_or_create(&RouteLabels { route }).observe(started.elapsed().as_secs_f64());
    response
}
