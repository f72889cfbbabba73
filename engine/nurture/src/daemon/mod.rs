//! The daemon's services, each in its own file: the rules in force and their
//! reload, the processor and its loop, retries, metrics and health, the
//! backlog gauges. They are wired together by the composition root
//! (`serve.rs`), which nothing here imports.

pub mod changes;
pub mod gauges;
pub mod health;
pub mod metrics;
pub mod processor;
pub mod reload;
pub mod retry;
pub mod rules;
pub mod worker;
