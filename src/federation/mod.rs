//! Between member gateways: mutual TLS pinned through the directory, the
//! peer client, the outbox worker, and what both ends of the federation
//! endpoint agree on (`wire`). (Packets are taken in by the HTTP
//! edge, `http::federation`.)

pub mod callbacks;
pub mod client;
pub mod inbox;
pub mod outbox;
pub mod push;
pub mod rounds;
pub mod tls;
pub mod webhook;
