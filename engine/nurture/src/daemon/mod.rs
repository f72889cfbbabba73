//! The daemon's services, each in its own file: the rules in force and their
//! reload, the processor and its workers, the partitions they step and
//! their leases across daemons, retries, metrics and health, the backlog
//! gauges. They are wired together by the composition root
//! (`serve.rs`), which nothing here imports.

pub mod changes;
pub mod gauges;
pub mod health;
pub mod leases;
pub mod metrics;
pub mod partitions;
pub mod processor;
pub mod pruner;
pub mod reload;
pub mod retry;
pub mod rules;
pub mod worker;
