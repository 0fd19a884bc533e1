//! Matching without disclosure (issue 22 §2): tracing requests about the
//! same family, open at two gateways, found without either showing the
//! other a name. `index` is the responding gateway's side: what it keeps
//! of each search sent from here, and the answer it gives a query.

pub mod index;
