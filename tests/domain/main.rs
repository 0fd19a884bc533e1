//! Integration tests of the domain core, in one test binary to save link time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod architecture;
mod bad_input;
mod cli;
mod doc_examples;
mod inbound;
mod matching;
mod onward;
mod policy_proofs;
mod policy_tests;
mod properties;
mod recipient_cli;
mod replies;
mod scenarios;
mod schemas;
mod support;
