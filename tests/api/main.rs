//! Black-box tests of the gateway service: a real server on a loopback port,
//! real TLS with client certificates, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod contract;
mod helpers;

mod audit_chain;
mod audit_queries;
mod bad_input;
mod bearer;
mod browser;
mod console;
mod client_certificates;
mod config;
mod doc_examples;
mod logs;
mod oidc_provider;
mod operations;
mod policies;
mod policy_impact;
mod policy_signoff;
mod agreements;
#[path = "../common/solver.rs"]
mod solver;
mod statistics;
mod priority;
mod callbacks;
mod overrides;
mod onward;
mod matching;
mod replies;
mod replicas;
#[path = "../common/replicas.rs"]
mod replica_processes;
mod referrals;
mod roles;
mod store;
mod delivery;
mod visibility;
mod deliverable;
mod end_to_end;
mod faults;
mod forwarding;
mod batching;
mod coalescing;
mod inbox;
mod peers;
mod retention;
mod trust_list;
mod rejections;
