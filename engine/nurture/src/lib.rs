//! Nurture: rules-driven marketing automation. This crate is the shell: the
//! durable store, the daemon, the HTTP API and the `nurture` command. The
//! engine itself is `nurture-core` (pure) and the WASM plugin host is
//! `nurture-plugins`; both are re-exported here under their usual names.
//!
//! # Layout (imports follow the data downward: api → daemon → store → core)
//! - [`api`]: the HTTP API and its state.
//! - [`serve`]: the composition root of `nurture serve` (only [`cli`] calls it).
//! - [`daemon`]: the daemon's services: processing, reloads, retries, metrics, health.
//! - [`email`], [`webhooks`]: delivery from the durable outbox.
//! - [`store`]: durable state in SQLite or PostgreSQL (sqlx).
//! - [`cli`]: the `nurture` command.
//! - [`clock`]: what time it is for the shell (a test can put in its own).
//! - re-exported: [`model`], [`cel`], [`rules`], [`eval`], [`sim`],
//!   [`ruletest`], [`view`], [`writes`] from `nurture-core`; [`plugins`] (`nurture-plugins`).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod cli;
pub mod clock;
pub mod daemon;
pub mod email;
pub mod redact;
pub mod serve;
pub mod store;
pub mod webhooks;

pub use nurture_core::{cel, eval, model, rules, ruletest, sim, view, writes};
pub use nurture_plugins as plugins;

#[cfg(test)]
mod layering;
