//! `nurture replay`: a backtest of a rules change on the history a daemon
//! stored. The events are read from its database page by page (only read:
//! the daemon goes on), run through the rules in force and through the
//! candidate in memory, and compared as `simulate --compare` compares
//! (sim::compare). `--export FILE` writes the same history as JSON Lines,
//! so a rules repository's CI can compare without the database. Leads whose
//! data was erased are counted and left out, never half-replayed.

use super::{compared, load, parse_until, print_comparison, Format};
use crate::model::{time, time::Timestamp, Event};
use crate::store::History;
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The candidate rules directory (not needed with --export).
    #[arg(
        long = "rules",
        value_name = "CANDIDATE_DIR",
        required_unless_present = "export"
    )]
    candidate: Option<PathBuf>,
    /// The rules in force.
    #[arg(long, value_name = "DIR", default_value = "rules")]
    current: PathBuf,
    /// The daemon's database.
    #[arg(
        long,
        env = "NURTURE_DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://nurture.db"
    )]
    database_url: String,
    /// Only events at or after this time (RFC 3339, or a date).
    #[arg(long)]
    since: Option<String>,
    /// Events up to this time, and due work up to it (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Only these leads (repeat for more).
    #[arg(long = "lead", value_name = "ID")]
    leads: Vec<String>,
    /// `text`, or `json`: one line per differing lead, then a summary line.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Differing leads shown in the text report.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Write the stored history (erased leads left out) to FILE as JSON
    /// Lines, as `simulate` reads them, instead of comparing.
    #[arg(long, value_name = "FILE")]
    export: Option<PathBuf>,
}

pub fn run(a: Args) -> ExitCode {
    let since = match parse_until(a.since.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let until = match parse_until(a.until.as_deref()) {
        Ok(u) => u.unwrap_or_else(chrono::Utc::now),
        Err(code) => return code,
    };
    // Rules first: a mistake in them is known before the history is read
    // (bad input: exit 2, whatever the errors).
    let rules = match &a.candidate {
        Some(c) if a.export.is_none() => match (load(&a.current), load(c)) {
            (Ok(b), Ok(c)) => Some((b, c)),
            _ => return ExitCode::from(2),
        },
        _ => None,
    };
    let only: HashSet<String> = a.leads.iter().cloned().collect();
    let history = match super::runtime()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(read(&a.database_url, since, until, &only)))
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("nurture replay: {e:#}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "{} events of {} leads read; {} erased and {} unreadable leads left out",
        history.events.len(),
        history.leads,
        history.erased,
        history.unreadable
    );
    if let Some(file) = &a.export {
        return export(file, &history.events);
    }
    let Some((base, cand)) = rules else {
        eprintln!("nurture replay: --rules CANDIDATE_DIR is needed to compare");
        return ExitCode::from(2);
    };
    match compared(&base, &cand, &history.events, Some(until)) {
        Ok(report) => print_comparison(&report, a.format, a.limit),
        Err(code) => code,
    }
}

/// Reads the stored history from the database at `url`, only reading it.
async fn read(
    url: &str,
    since: Option<Timestamp>,
    until: Timestamp,
    only: &HashSet<String>,
) -> anyhow::Result<History> {
    // Only read: never create a database that is not there.
    let url = match url.strip_prefix("sqlite://") {
        Some(path) if !url.contains("mode=") => {
            let file = path.split('?').next().unwrap_or(path);
            if !std::path::Path::new(file).is_file() {
                anyhow::bail!("no database at {file}");
            }
            format!("{url}{}mode=ro", if url.contains('?') { "&" } else { "?" })
        }
        _ => url.to_string(),
    };
    let store = crate::store::Store::connect(&url).await?;
    let terminal = std::io::stderr().is_terminal();
    let mut progress = |n: usize| {
        if terminal {
            eprint!("\rread {n} events");
        }
    };
    let history = store
        .stored_history(since, until, only, &mut progress)
        .await?;
    if terminal {
        eprintln!();
    }
    Ok(history)
}

fn export(file: &std::path::Path, events: &[Event]) -> ExitCode {
    let written = std::fs::File::create(file).and_then(|f| {
        let mut out = std::io::BufWriter::new(f);
        for e in events {
            writeln!(out, "{}", e.to_json())?;
        }
        out.flush()
    });
    match written {
        Ok(()) => {
            println!(
                "{} events written to {} (up to {})",
                events.len(),
                file.display(),
                events
                    .iter()
                    .map(|e| e.at)
                    .max()
                    .map_or("-".into(), |t| time::format(&t))
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: cannot write: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}
