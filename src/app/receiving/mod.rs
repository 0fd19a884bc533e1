//! The receiving gateway's use cases: a packet from a peer checked and
//! answered with a receipt, screened, forwarded to its recipient (listed, or
//! pushed to its webhook), and what comes back about referrals sent from
//! here applied to them.

pub mod inbox;
pub mod pushing;
pub mod received;
pub mod screening;
