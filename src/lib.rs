//! referral-gateway: the per-country gateway of a transnational referral federation.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

#[macro_use]
mod macros;

pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod dev_pki;
pub mod directory;
pub mod domain;
pub mod federation;
pub mod hex;
pub mod http;
pub mod policy_files;
pub mod policy_proofs;
pub mod policy_tests;
pub mod recipient;
pub mod schemas;
pub mod setup;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod wire;
