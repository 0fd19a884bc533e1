//! The recipient organisation's use cases, over its inbox at this gateway.

pub mod cases;
