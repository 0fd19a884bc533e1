//! The recipient organisation's use cases, over its inbox at this gateway:
//! its cases (`cases`), and passing one on within its country (`onward`).

pub mod cases;
pub mod onward;
