//! Rules: read from YAML (`load`), checked and compiled (`compile`) into the
//! [`Ruleset`] the evaluator runs.
//!
//! Pipeline: files → `config` types (shape) → `compile` (CEL, references,
//! templates) → [`Ruleset`]. Every problem becomes a [`Diagnostic`] with
//! `file:line:col`; all of them are collected, not just the first.

mod compile;
#[cfg(test)]
mod compile_tests;
pub mod config;
mod coverage;
pub mod cron5;
mod load;
pub mod source;
pub mod templates;

pub use compile::{
    Campaign, FitRule, Owner, Plugin, RouteRule, Ruleset, ScoringRule, Settings, Sla, Step, Timing,
    Trigger, WebhookTarget, DEFAULT_FUEL, DEFAULT_MEMORY, DEFAULT_TIMEOUT_MS,
};
pub use coverage::EventTypes;
pub use load::{
    collect_yaml, deserialize_at, load_dir, load_text, parse_yaml, read_yaml, Diagnostic,
    Diagnostics,
};

pub use crate::suggest::suggest;
