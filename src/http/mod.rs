//! The HTTP edge: axum router, problem+json errors, authentication of
//! callers, metrics, and the (m)TLS server.

pub mod auth;
pub mod body_guard;
pub mod console;
pub mod extract;
pub mod federation;
pub mod head_limits;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod server;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use serde_json::Value;

use crate::app::Gateway;
use auth::Authenticator;
use metrics::Metrics;

pub use openapi::{openapi_json, openapi_yaml};

#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    pub openapi: Arc<Value>,
    pub body_limit: usize,
    /// The console for DPOs and auditors, when configured.
    pub console: Option<Arc<console::Console>>,
}

/// Every (method, path) the API serves. The router is built from this list
/// and a test compares it with `schemas/openapi.yaml`.
pub fn route_table() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    fn route<H, T>(method: Method, path: &'static str, handler: H) -> (Method, &'static str, MethodRouter<AppState>)
    where
        H: axum::handler::Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        (method, path, on(filter, handler))
    }
    vec![
        route(Method::POST, "/v1/referrals", routes::submit_referral),
        route(Method::GET, "/v1/referrals", routes::get_referrals),
        route(Method::GET, "/v1/referrals/{id}", routes::get_referral),
        route(Method::POST, "/v1/referrals/{id}/consent-withdrawal", routes::withdraw_consent),
        route(Method::POST, "/v1/referrals/{id}/matches", routes::find_matches),
        route(Method::GET, "/v1/policies", routes::get_policies),
        route(Method::PUT, "/v1/policies", routes::put_policies),
        route(Method::POST, "/v1/policies/simulate", routes::simulate),
        route(Method::GET, "/v1/policies/{number}", routes::get_policy_version),
        route(Method::POST, "/v1/policies/{number}/approve", routes::approve_policy),
        route(Method::POST, "/v1/policies/{number}/reject", routes::reject_policy),
        route(Method::POST, "/v1/policies/{number}/restore", routes::restore_policy),
        route(Method::GET, "/v1/overrides", routes::get_overrides),
        route(Method::POST, "/v1/overrides/{referral_id}/approve", routes::approve_override),
        route(Method::POST, "/v1/overrides/{referral_id}/reject", routes::reject_override),
        route(Method::GET, "/v1/audit", routes::get_audit),
        route(Method::GET, "/v1/disclosures", routes::get_disclosures),
        route(Method::GET, "/v1/subjects/{subject_ref}/report", routes::get_subject_report),
        route(Method::GET, "/v1/statistics", routes::get_statistics),
        route(Method::POST, "/v1/subjects/{subject_ref}/consent-withdrawal", routes::withdraw_subject_consent),
        route(Method::GET, "/v1/inbox", routes::get_inbox),
        route(Method::GET, "/v1/inbox/{packet_id}", routes::get_inbox_case),
        route(Method::POST, "/v1/inbox/{packet_id}/ack", routes::acknowledge),
        route(Method::POST, "/v1/inbox/{packet_id}/status", routes::report_status),
        route(Method::POST, "/v1/inbox/{packet_id}/refer-onward", routes::refer_onward),
        route(Method::POST, "/v1/inbox/{packet_id}/replies", routes::reply_to_case),
        route(Method::POST, "/v1/inbox/{packet_id}/erasure-confirmed", routes::confirm_erasure),
        route(Method::GET, "/v1/openapi.json", routes::openapi),
        route(Method::GET, "/healthz", routes::healthz),
        route(Method::GET, "/readyz", routes::readyz),
        route(Method::GET, "/metrics", routes::metrics),
    ]
}

/// The (method, path) pairs of [`route_table`].
pub fn served_routes() -> Vec<(Method, &'static str)> {
    route_table().into_iter().map(|(method, path, _)| (method, path)).collect()
}

pub fn router(state: AppState) -> Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for (_, path, method_router) in route_table() {
        let merged = match by_path.remove(path) {
            Some(existing) => existing.merge(method_router),
            None => method_router,
        };
        by_path.insert(path, merged);
    }
    let mut router = Router::new();
    for (path, method_router) in by_path {
        router = router.route(path, method_router.fallback(routes::method_not_allowed));
    }
    router
        .merge(console::routes())
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn(head_limits::enforce))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}
