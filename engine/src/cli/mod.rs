//! The `nurture` command: argument parsing and the thin layer that prints.
//! Each subcommand reads its inputs, calls the library, and maps the outcome
//! to output and an exit code.

use crate::eval::Evaluator;
use crate::model::time;
use crate::rules::Ruleset;
use crate::sim::{self, World};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "nurture",
    version,
    about = "Rules-driven marketing automation: lead scoring, drips and routing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a rules directory; print every error as file:line:col.
    Check {
        /// The rules directory.
        #[arg(default_value = "rules")]
        dir: PathBuf,
    },
    /// Dry-run events through the rules in memory; print one JSON line per lead.
    Simulate {
        #[arg(default_value = "rules")]
        dir: PathBuf,
        /// Events as JSON Lines.
        #[arg(long)]
        events: PathBuf,
        /// Run scheduled work up to this time (RFC 3339; default: the last event's time).
        #[arg(long)]
        until: Option<String>,
    },
    /// Run the rule tests (*.test.yaml) found in a rules directory.
    Test {
        #[arg(default_value = "rules")]
        dir: PathBuf,
    },
    /// Print the JSON Schema of the rules format (for editors).
    Schema,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { dir } => check(&dir),
        Command::Simulate { dir, events, until } => simulate(&dir, &events, until.as_deref()),
        Command::Test { dir } => test(&dir),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::rules::config::schema()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
    }
}

fn load(dir: &Path) -> Result<Ruleset, ExitCode> {
    Ruleset::load(dir).map_err(|diags| {
        for d in &diags.0 {
            eprintln!("{d}");
        }
        eprintln!(
            "{} error{} in {}",
            diags.0.len(),
            if diags.0.len() == 1 { "" } else { "s" },
            dir.display()
        );
        ExitCode::FAILURE
    })
}

fn check(dir: &Path) -> ExitCode {
    match load(dir) {
        Ok(rules) => {
            println!("{} ok: {}", dir.display(), rules.summary());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn simulate(dir: &Path, events: &Path, until: Option<&str>) -> ExitCode {
    let rules = match load(dir) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let until = match until.map(|u| (u, time::parse(u))) {
        None => None,
        Some((_, Ok(t))) => Some(t),
        Some((u, Err(e))) => {
            eprintln!("--until: {u:?} is not an RFC 3339 time such as 2026-02-20T00:00:00Z ({e})");
            return ExitCode::from(2);
        }
    };
    let mut evs = match sim::read_events_file(events) {
        Ok(e) => e,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let mut world = World::new(Evaluator::new(&rules));
    world.run(&mut evs, until);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for lead in world.in_order() {
        if writeln!(out, "{}", sim::lead_line(lead)).is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn test(dir: &Path) -> ExitCode {
    let rules = match load(dir) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let results = match crate::ruletest::run_dir(&rules, dir) {
        Ok(r) => r,
        Err(diags) => {
            for d in diags {
                eprintln!("{d}");
            }
            return ExitCode::FAILURE;
        }
    };
    let failed = results.iter().filter(|r| !r.diffs.is_empty()).count();
    for r in &results {
        if r.diffs.is_empty() {
            println!("PASS {}", r.name);
        } else {
            println!("FAIL {} ({})", r.name, r.place);
            for d in &r.diffs {
                println!("  {d}");
            }
        }
    }
    if results.is_empty() {
        println!("no rule tests (*.test.yaml) in {}", dir.display());
    }
    println!(
        "rule tests: {} passed, {} failed",
        results.len() - failed,
        failed
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
