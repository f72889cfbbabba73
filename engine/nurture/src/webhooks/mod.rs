//! Outgoing webhooks: the body and signature are composed in the core
//! (`nurture_core::webhook`, pure); this module delivers them from the
//! durable outbox.

pub mod deliver;

pub use nurture_core::webhook::*;
