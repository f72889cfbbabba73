//! Nurture: rules-driven marketing automation.
//!
//! # Layout
//! - [`model`]: leads, events and what a lead accumulates. Plain data.
//! - [`rules`]: the YAML rules format, its loading, checking and compiling
//!   into a [`rules::Ruleset`].
//! - [`eval`]: the evaluator, a pure function of (rules, lead, routing book,
//!   event or timer) to (new lead, effects). No clock, no I/O.
//! - [`sim`]: an in-memory world that drives the evaluator in time order:
//!   `nurture simulate` and `nurture test` run on it.
//! - [`ruletest`]: marketers' rule tests (`*.test.yaml`).
//! - [`plugins`]: the WASM plugin host (wasmtime) behind [`eval::PluginHost`].
//! - [`store`]: durable state in SQLite or PostgreSQL (sqlx).
//! - [`daemon`]: `nurture serve`: processing, scheduling, reloads, shutdown.
//! - [`api`]: the HTTP API.
//! - [`webhooks`]: outgoing webhooks: composed, signed, delivered from the outbox.
//! - [`cli`]: the `nurture` command.

pub mod api;
pub mod cli;
pub mod daemon;
pub mod email;
pub mod eval;
pub mod model;
pub mod plugins;
pub mod rules;
pub mod ruletest;
pub mod sim;
pub mod store;
pub mod webhooks;
