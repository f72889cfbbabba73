//! nurture-core: the pure engine. Rules in, decisions out; no clock of its
//! own, no I/O but reading rules and event files, no async runtime.
//!
//! # Layout (each module imports only those above it)
//! - [`suggest`]: did-you-mean hints for error messages.
//! - [`model`]: leads, events and what a lead accumulates. Plain data.
//! - [`cel`]: CEL conditions, compiled once and evaluated against a lead,
//!   an event and a time.
//! - [`rules`]: the YAML rules format, its loading, checking and compiling
//!   into a [`rules::Ruleset`].
//! - [`eval`]: the evaluator, a pure function of (rules, lead, routing book,
//!   event or timer) to (new lead, effects). Plugins are called through
//!   [`eval::PluginHost`], implemented by the `nurture-plugins` crate.
//! - [`ingest`]: the JSON in which events arrive (ours, Segment's), parsed.
//! - [`mail`]: emails composed from templates, and signed unsubscribe links.
//! - [`webhook`]: webhook bodies and their Standard Webhooks signatures.
//! - [`writes`]: what a decision leaves to store (timeline, outbox, timers), typed.
//! - [`rows`]: what a lead becomes in the database's rows, and back.
//! - [`reports`]: report arithmetic (the per-owner report).
//! - [`view`]: how a lead is shown (`simulate`'s line, the API's detail).
//! - [`sim`]: an in-memory world that drives the evaluator in time order:
//!   `nurture simulate` and `nurture test` run on it.
//! - [`ruletest`]: marketers' rule tests (`*.test.yaml`).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cel;
pub mod eval;
pub mod ingest;
pub mod mail;
pub mod model;
pub mod reports;
pub mod rows;
pub mod rules;
pub mod ruletest;
pub mod sim;
pub mod suggest;
pub mod view;
pub mod webhook;
pub mod writes;
