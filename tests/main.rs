//! The integration tests, one binary: each module is one area, run against
//! the real `nurture` binary, real SQLite and PostgreSQL, real SMTP and HTTP.
//! One binary links wasmtime and sqlx once instead of once per file.

mod support;

mod arrival;
mod backup;
mod cli;
mod config;
mod daemon;
mod email;
mod import;
mod observe;
mod openapi;
mod plugins;
mod poison;
mod reliability;
mod replay;
mod retention;
mod routing;
mod scale_out;
mod ticks;
