//! The sending gateway's use cases: a referral submitted, decided and
//! queued; followed, and watched against its deadlines, its timeline
//! pushed to the sending system (status callbacks); its consent
//! withdrawn; its packets delivered to the peer gateway, and what is
//! observed of that delivery.

pub mod callbacks;
pub mod coalescing;
pub mod deadlines;
pub mod delivery;
pub mod delivery_observer;
pub mod listing;
pub mod referrals;
pub mod withdrawal;
