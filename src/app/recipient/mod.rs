//! The recipient organisation's use cases, over its inbox at this gateway:
//! its cases (`cases`), passing one on within its country (`onward`), and
//! answering a tracing or family-assessment request with a reply case (`replies`).

pub mod cases;
pub mod onward;
pub mod replies;
