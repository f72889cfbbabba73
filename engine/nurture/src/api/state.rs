//! What the HTTP handlers share: the store, the rules in force, metrics and
//! health, the group-commit ingestor, credentials, the rate limits (failed
//! authentications, ingest) and the clock. Built by
//! the composition root (`serve.rs`), which hands it to [`super::router`].

use super::access::Access;
use super::limit::{AuthFailures, IngestLimits};
use crate::clock::Clock;
use crate::daemon::health::Health;
use crate::daemon::metrics::Metrics;
use crate::daemon::partitions::Partitions;
use crate::daemon::rules::RulesHandle;
use crate::email::Secret;
use crate::store::{Ingestor, Store};
use std::sync::Arc;

/// Shared by the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub rules: RulesHandle,
    pub metrics: Arc<Metrics>,
    /// What `/healthz` reads (the same the metrics report to).
    pub health: Arc<Health>,
    /// Told the partitions of new events: wakes a worker for them.
    pub partitions: Arc<Partitions>,
    /// Writes accepted events, grouping concurrent requests.
    pub ingest: Ingestor,
    /// The API token, write keys and allowed origins.
    pub access: Arc<Access>,
    /// Failed authentications per client address (429 past the limit).
    pub auth_failures: Arc<AuthFailures>,
    /// Ingest requests per write key and per address (429 past them).
    pub ingest_limits: Arc<IngestLimits>,
    /// Verifies unsubscribe tokens.
    pub secret: Secret,
    /// When requests arrive: the time events are received at.
    pub clock: Clock,
    /// Rules previews running and done (`/v1/rules/preview`).
    pub previews: Arc<super::preview::Previews>,
}
