//! referral-gateway: the per-country gateway of a transnational referral federation.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod cli;
pub mod directory;
pub mod domain;
pub mod policy_files;
pub mod schemas;
