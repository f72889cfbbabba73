//! The CLI's side of plugins: the host `simulate` and `test` run them with,
//! the component check of `nurture check`, and `nurture plugin run`, the
//! developer's test bench.

use crate::model::{time, Consent, Event, LeadState, Stage};
use crate::plugins::{self, Host, Options};
use crate::rules::config::{DurationSpec, MemorySpec};
use crate::rules::{Diagnostic, Plugin, Ruleset};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The host for `simulate` and `test`; `None` without plugins. A plugin that
/// cannot be loaded is reported as a warning and its calls fail (recorded on
/// the timeline), as in the daemon; `nurture check` treats it as an error.
pub fn host(rules: &Ruleset) -> Result<Option<Host>, ExitCode> {
    if rules.plugins.is_empty() {
        return Ok(None);
    }
    let host = Host::new(&rules.plugins, Options::default()).map_err(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })?;
    for p in &rules.plugins {
        if let Some(e) = host.load_error(&p.name) {
            let d = Diagnostic {
                message: format!("warning: plugin `{}`: {e}; its calls will fail", p.name),
                ..p.wasm_at.clone()
            };
            eprintln!("{d}");
        }
    }
    Ok(Some(host))
}

/// `nurture check`: every plugin must load.
pub fn check(rules: &Ruleset) -> Vec<Diagnostic> {
    plugins::check(rules, Options::default())
}

/// What `plugin run` takes as the lead: any subset of a lead's fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LeadInput {
    id: String,
    email: String,
    score: i64,
    fit: i64,
    stage: Stage,
    owner: Option<String>,
    consent: Consent,
    attributes: Map<String, Value>,
    created_at: Option<String>,
    last_activity_at: Option<String>,
}

impl Default for LeadInput {
    fn default() -> Self {
        LeadInput {
            id: "lead".into(),
            email: String::new(),
            score: 0,
            fit: 0,
            stage: Stage::Subscriber,
            owner: None,
            consent: Consent::Unknown,
            attributes: Map::new(),
            created_at: None,
            last_activity_at: None,
        }
    }
}

/// What `nurture plugin run` takes.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The plugin (.wasm component).
    pub file: PathBuf,
    /// The lead, JSON: any of id, email, score, fit, stage, owner, consent,
    /// attributes, created_at, last_activity_at.
    #[arg(long, default_value = "{}")]
    pub lead: String,
    /// The event, JSON as in events files (`type` is enough).
    #[arg(long)]
    pub event: String,
    /// The plugin's config, JSON (default {}).
    #[arg(long)]
    pub config: Option<String>,
    /// Fuel for the call (default 10000000).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Memory limit, e.g. 16MiB (the default).
    #[arg(long)]
    pub memory: Option<String>,
    /// Wall-clock limit, e.g. 100ms (the default).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Use the compile cache (as check, simulate and serve do).
    #[arg(long)]
    pub cache: bool,
}

/// `nurture plugin run`: one call, and everything about it.
pub fn run(a: RunArgs) -> ExitCode {
    match prepare(&a) {
        Ok((plugin, lead, event)) => {
            let opts = Options {
                cache_dir: if a.cache {
                    Options::default().cache_dir
                } else {
                    None
                },
                max_concurrent: 1,
                ..Options::default()
            };
            let host = match Host::new(std::slice::from_ref(&plugin), opts) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(e) = host.load_error(&plugin.name) {
                eprintln!("{}: {e}", a.file.display());
                return ExitCode::FAILURE;
            }
            let r = host.call_report(&plugin, &lead, &event);
            match &r.result {
                Ok(effects) => {
                    println!("effects: {}", effects.len());
                    for e in effects {
                        println!("  {}", serde_json::to_string(e).unwrap_or_default());
                    }
                }
                Err(e) => println!("error: {e}"),
            }
            match &r.result {
                // Fuel burnt since the last call or loop check is not counted then.
                Err(e) if e.starts_with("timed out") => {
                    println!("fuel: at least {} of {}", r.fuel_used, plugin.fuel)
                }
                _ => println!("fuel: {} of {}", r.fuel_used, plugin.fuel),
            }
            println!("time: {:.3} ms", r.elapsed.as_secs_f64() * 1e3);
            println!(
                "memory: {} peak (limit {})",
                plugins::bytes(r.peak_memory),
                plugins::bytes(plugin.memory_bytes)
            );
            for (level, m) in &r.logs {
                println!("log {}: {m}", plugins::level_name(*level));
            }
            if r.logs_dropped > 0 {
                println!(
                    "log: {} more messages dropped (over the budget)",
                    r.logs_dropped
                );
            }
            if r.result.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
    }
}

fn prepare(a: &RunArgs) -> Result<(Plugin, LeadState, Event), String> {
    let lead: LeadInput = serde_json::from_str(&a.lead).map_err(|e| format!("--lead: {e}"))?;
    let event: Value = serde_json::from_str(&a.event).map_err(|e| format!("--event: {e}"))?;
    let mut event = match event {
        Value::Object(m) => m,
        _ => return Err("--event: not a JSON object".into()),
    };
    // Only the type is required here; the rest gets test-bench defaults.
    event.entry("id").or_insert_with(|| "e1".into());
    event
        .entry("lead")
        .or_insert_with(|| lead.id.clone().into());
    let now = time::parse("2026-01-01T00:00:00Z").map_err(|e| e.to_string())?;
    let event =
        Event::from_json(&Value::Object(event), Some(now)).map_err(|e| format!("--event: {e}"))?;
    let ts = |what: &str, s: &Option<String>| -> Result<_, String> {
        match s {
            None => Ok(event.at),
            Some(s) => time::parse(s).map_err(|e| format!("--lead: {what}: {e}")),
        }
    };
    let mut state = LeadState::new(&lead.id, ts("created_at", &lead.created_at)?);
    state.last_activity_at = ts("last_activity_at", &lead.last_activity_at)?;
    state.email = lead.email;
    state.score = lead.score;
    state.fit = lead.fit;
    state.stage = lead.stage;
    state.owner = lead.owner;
    state.consent = lead.consent;
    state.attributes = lead.attributes;

    let config = match &a.config {
        None => "{}".to_string(),
        Some(c) => serde_json::from_str::<Value>(c)
            .map_err(|e| format!("--config: {e}"))?
            .to_string(),
    };
    let memory_bytes = match &a.memory {
        None => crate::rules::DEFAULT_MEMORY,
        Some(m) => {
            m.parse::<MemorySpec>()
                .map_err(|e| format!("--memory: {e}"))?
                .0
        }
    };
    let timeout = match &a.timeout {
        None => chrono::Duration::milliseconds(crate::rules::DEFAULT_TIMEOUT_MS),
        Some(t) => {
            t.parse::<DurationSpec>()
                .map_err(|e| format!("--timeout: {e}"))?
                .0
        }
    };
    let plugin = Plugin {
        name: plugin_name(&a.file),
        wasm: a.file.clone(),
        on: vec!["*".into()],
        config_json: config,
        fuel: a.fuel.unwrap_or(crate::rules::DEFAULT_FUEL),
        memory_bytes,
        timeout,
        wasm_at: Diagnostic {
            file: a.file.display().to_string(),
            pos: crate::rules::source::Pos { line: 1, col: 1 },
            message: String::new(),
        },
        config_at: Diagnostic {
            file: "--config".into(),
            pos: crate::rules::source::Pos { line: 1, col: 1 },
            message: String::new(),
        },
    };
    Ok((plugin, state, event))
}

fn plugin_name(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into())
}
