//! Between member gateways: mutual TLS pinned through the directory (and,
//! to come, the peer client, the outbox worker and the inbox).

pub mod tls;
