//! The `nurture` command: argument parsing and the thin layer that prints.
//! Each subcommand reads its inputs, calls the library, and maps the outcome
//! to output and an exit code.

use crate::eval::Evaluator;
use crate::model::time;
use crate::rules::{EventTypes, Ruleset};
use crate::sim::{self, World};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod config;
mod import;
mod ops;
mod plugin;
mod replay;

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
        /// An events file (JSON Lines, as for `simulate`): warn about rules
        /// none of its events fire and event types no rule reads.
        #[arg(long)]
        events: Option<PathBuf>,
    },
    /// Dry-run events through the rules in memory; print one JSON line per lead.
    Simulate {
        #[arg(default_value = "rules")]
        dir: PathBuf,
        /// Events as JSON Lines.
        #[arg(long)]
        events: PathBuf,
        /// Run scheduled work up to this time (RFC 3339, or a date for its
        /// midnight UTC; default: the last event's time).
        #[arg(long)]
        until: Option<String>,
        /// Tell each lead's story: every decision with its reason (points
        /// and the limits that stopped a rule, stage moves and their
        /// condition, emails rendered or why they waited, assignments,
        /// notices, webhooks, plugin failures). `text` (the default) is for
        /// reading; `json` adds a `timeline` to each line.
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "text")]
        explain: Option<Explain>,
        /// A candidate rules directory: run the events through both, and
        /// report what the candidate changes (leads per stage, MQLs and SQLs
        /// gained and lost, emails, assignments, scores, and each lead that
        /// ends differently, with where its history parts).
        #[arg(long, value_name = "CANDIDATE_DIR", conflicts_with = "explain")]
        compare: Option<PathBuf>,
        /// The comparison as `text` or `json` (one line per differing lead,
        /// then a summary line).
        #[arg(long, value_enum, default_value = "text", requires = "compare")]
        format: Format,
        /// Differing leads shown in the text comparison.
        #[arg(long, default_value_t = 20, requires = "compare")]
        limit: usize,
    },
    /// Run the rule tests (*.test.yaml) found in a rules directory.
    Test {
        #[arg(default_value = "rules")]
        dir: PathBuf,
    },
    /// Print the JSON Schema of the rules format (for editors).
    Schema,
    /// Print the OpenAPI 3.1 document of the daemon's HTTP API (what a
    /// running daemon serves at GET /openapi.json).
    Openapi,
    /// Work on a WASM scoring plugin.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Print a deterministic workload of lead events as JSON Lines (for
    /// benchmarks and load tests): the same seed gives the same events.
    Gen {
        /// How many distinct leads.
        #[arg(long, default_value_t = 1000)]
        leads: usize,
        /// How many events.
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Time of the first event (RFC 3339); later ones follow 1–30 s apart.
        #[arg(long, default_value = "2026-01-01T00:00:00Z")]
        start: String,
        /// Spread the events over about this long instead (`30d`, `12h`):
        /// a denser or sparser stream of the same leads and kinds.
        #[arg(long)]
        span: Option<String>,
    },
    /// Run the daemon: HTTP API, durable storage, scheduler.
    Serve(Box<ServeArgs>),
    /// List leads in quarantine (set aside by the processor) with cause and
    /// time; with --retry, release one so a running daemon applies its
    /// waiting events again.
    Doctor {
        #[arg(
            long,
            env = "NURTURE_DATABASE_URL",
            default_value = "sqlite://nurture.db",
            hide_env_values = true
        )]
        database_url: String,
        /// The database URL read from this file (as `serve --database-url-file`).
        #[arg(long, env = "NURTURE_DATABASE_URL_FILE", value_name = "FILE")]
        database_url_file: Option<PathBuf>,
        /// Release this lead from quarantine (after fixing the cause).
        #[arg(long, value_name = "LEAD")]
        retry: Option<String>,
    },
    /// Backtest a rules change on the history a daemon stored: its events
    /// run through the rules in force and the candidate in memory (the
    /// database is only read), and what differs is reported as by
    /// `simulate --compare`; or `--export` writes that history as JSON Lines.
    Replay(replay::Args),
    /// Import history from another tool into a running daemon: the events
    /// are posted in time order, and the emails, notices and webhooks
    /// they decide up to now are recorded, not sent.
    Import {
        /// Events as JSON Lines (as for `simulate`).
        file: PathBuf,
        /// The daemon's base URL.
        #[arg(long, env = "NURTURE_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The daemon's API token, if it has one.
        #[arg(long, env = "NURTURE_API_TOKEN", hide_env_values = true)]
        api_token: Option<String>,
    },
    /// Prune what is older than the retention settings (as `serve` does in
    /// the background), a batch per transaction; say per kind how many rows.
    Prune(ops::PruneArgs),
    /// The outbox after a restore: `hold` it (nothing pending is sent),
    /// `release` it (what waits is sent), `cancel` what waits (never sent;
    /// lifts the hold), or show its `status`.
    #[command(subcommand)]
    Outbox(ops::OutboxCommand),
    /// Create or upgrade the database schema, then exit.
    Migrate {
        #[arg(
            long,
            env = "NURTURE_DATABASE_URL",
            default_value = "sqlite://nurture.db",
            hide_env_values = true
        )]
        database_url: String,
        /// The database URL read from this file (as `serve --database-url-file`).
        #[arg(long, env = "NURTURE_DATABASE_URL_FILE", value_name = "FILE")]
        database_url_file: Option<PathBuf>,
        /// Partitions a new database is made with (see `serve --partitions`).
        #[arg(long, env = "NURTURE_PARTITIONS", default_value_t = crate::store::DEFAULT_PARTITIONS, value_parser = clap::value_parser!(u32).range(1..=1024))]
        partitions: u32,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML file of settings: its keys are these flags' names
    /// (`database-url = "..."`, `write-key = ["..."]`). A flag wins over
    /// its variable, which wins over the file (docs/daemon.md, Config file).
    #[arg(long, env = "NURTURE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// sqlite://FILE (embedded, the default) or postgres://...
    #[arg(
        long,
        env = "NURTURE_DATABASE_URL",
        default_value = "sqlite://nurture.db",
        hide_env_values = true
    )]
    database_url: String,
    /// The database URL read from this file (it holds a password).
    #[arg(long, env = "NURTURE_DATABASE_URL_FILE", value_name = "FILE")]
    database_url_file: Option<PathBuf>,
    /// The rules directory.
    #[arg(long, env = "NURTURE_RULES", default_value = "rules")]
    rules: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "NURTURE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// SMTP server for email (default: write .eml files to --outbox).
    #[arg(long, env = "NURTURE_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// The SMTP URL read from this file (it may hold a password).
    #[arg(long, env = "NURTURE_SMTP_URL_FILE", value_name = "FILE")]
    smtp_url_file: Option<PathBuf>,
    /// Folder for .eml files when no SMTP server is set.
    #[arg(long, env = "NURTURE_OUTBOX", default_value = "outbox")]
    outbox: PathBuf,
    /// Bearer token required on /v1 (without one, only loopback is served).
    #[arg(long, env = "NURTURE_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// The API token read from this file (a trailing newline is dropped):
    /// not visible in `ps` or the environment.
    #[arg(long, env = "NURTURE_API_TOKEN_FILE", value_name = "FILE")]
    api_token_file: Option<PathBuf>,
    /// Write key, for sending events only (POST /v1/events and the Segment
    /// routes): safe in a web page. Repeat, or separate with commas.
    #[arg(
        long = "write-key",
        env = "NURTURE_WRITE_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    write_keys: Vec<String>,
    /// File of write keys: one a line, `KEY [NAME]`, `#` comments; re-read
    /// when it changes and on SIGHUP (a key removed is revoked).
    #[arg(long, env = "NURTURE_WRITE_KEYS_FILE")]
    write_keys_file: Option<PathBuf>,
    /// Browser origin allowed to send events (CORS), e.g.
    /// https://www.example.com, or `*`. Repeat, or separate with commas.
    #[arg(
        long = "cors-origin",
        env = "NURTURE_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Public base URL, for links in emails.
    #[arg(long, env = "NURTURE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Secret that signs unsubscribe tokens.
    #[arg(long, env = "NURTURE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The signing secret read from this file.
    #[arg(long, env = "NURTURE_SECRET_FILE", value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Log as JSON lines instead of text (the variable takes 1/0, yes/no,
    /// true/false, on/off).
    #[arg(
        long,
        env = "NURTURE_LOG_JSON",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    log_json: bool,
    /// /healthz says "degraded" when the processor has not advanced (no
    /// step committed, while there is work) for this long.
    #[arg(long, env = "NURTURE_STALL_AFTER", default_value = "30s")]
    stall_after: crate::rules::config::DurationSpec,
    /// /readyz says "not ready" when the oldest event waiting to be applied,
    /// or the oldest overdue drip step or timer, is older than this.
    #[arg(long, env = "NURTURE_READY_MAX_LAG", default_value = "5m")]
    ready_max_lag: crate::rules::config::DurationSpec,
    /// Most events one processing step grows to while a backlog waits
    /// (steps start at 100 and double while they come back full).
    #[arg(long, env = "NURTURE_MAX_BATCH", default_value_t = crate::daemon::processor::MAX_BATCH, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    max_batch: i64,
    /// Workers applying partitions side by side (one evaluates while
    /// another's step commits). Default: the machine's cores, at most 4.
    #[arg(long, env = "NURTURE_WORKERS", default_value_t = default_workers(), value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Partitions a new database is made with: leads hash into them, each is
    /// applied in order, different ones in parallel and, on PostgreSQL, by
    /// different daemons. A database keeps the number it was made with
    /// (docs/daemon.md, Partitions).
    #[arg(long, env = "NURTURE_PARTITIONS", default_value_t = crate::store::DEFAULT_PARTITIONS, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: u32,
    /// Routing decisions (an owner picked, a capacity checked, a place
    /// freed) wait while another partition has work from more than this
    /// much earlier, so they are taken in the order of their events' times,
    /// as `simulate` takes them (0s: exactly). Unset: they never wait and go
    /// in the order the partitions' steps commit (fastest; capacity and
    /// rotations stay exact, but which lead gets which owner may differ
    /// from `simulate` under a backlog). See docs/daemon.md, Partitions.
    #[arg(long, env = "NURTURE_ROUTING_WINDOW")]
    routing_window: Option<crate::rules::config::DurationSpec>,
    /// How long before the latest thing its lead has seen (an event, due
    /// work, a `schedule` tick) an event may have happened and still take
    /// its place in the lead's history: the lead is re-folded from its
    /// stored events, as `simulate` would apply them. A later one is
    /// applied as it arrives and marked `late` on the timeline
    /// (docs/daemon.md, Arrival order). 0s: every event as it arrives.
    #[arg(long, env = "NURTURE_ALLOWED_LATENESS", default_value = "1h")]
    allowed_lateness: crate::rules::config::DurationSpec,
    /// Close a connection that has not sent a whole request head for this
    /// long: a new one, one sending headers slowly, or a keep-alive
    /// connection idle after its last response.
    #[arg(long, env = "NURTURE_HEADER_TIMEOUT", default_value = "30s")]
    header_timeout: crate::rules::config::DurationSpec,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, env = "NURTURE_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// On SIGTERM, how long requests in progress may take before their
    /// connections are closed.
    #[arg(long, env = "NURTURE_SHUTDOWN_TIMEOUT", default_value = "10s")]
    shutdown_timeout: crate::rules::config::DurationSpec,
    /// Failed authentications per minute from one address before it gets
    /// 429 with Retry-After (0: no limit).
    #[arg(long, env = "NURTURE_AUTH_FAILURES_PER_MINUTE", default_value_t = 60)]
    auth_failures_per_minute: u32,
    /// Requests per second one write key may make to the ingest routes (a
    /// batch is one request; bursts of one second's worth), then 429 with
    /// Retry-After. 0: no limit.
    #[arg(long, env = "NURTURE_INGEST_PER_KEY", default_value_t = 0)]
    ingest_per_key: u32,
    /// Requests per second one client address may make to the ingest
    /// routes, whatever its credential; then 429. 0: no limit.
    #[arg(long, env = "NURTURE_INGEST_PER_ADDRESS", default_value_t = 0)]
    ingest_per_address: u32,
    #[command(flatten)]
    retention: ops::RetentionArgs,
    /// How often the background pruner runs (it also runs at start).
    #[arg(long, env = "NURTURE_PRUNE_EVERY", default_value = "10m")]
    prune_every: crate::rules::config::DurationSpec,
    /// Start with the outbox held (after restoring a backup): nothing
    /// pending is sent until `nurture outbox release` or `cancel`. The hold
    /// is stored, so it outlasts a restart.
    #[arg(
        long,
        env = "NURTURE_HOLD_OUTBOX",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    hold_outbox: bool,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Call a plugin once; print its effects, fuel used, time and peak memory.
    Run(plugin::RunArgs),
}

pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if let Command::Serve(a) = cli.command {
        return match serve_settings(*a, &matches) {
            Ok(a) => serve(a),
            Err(e) => {
                eprintln!("nurture serve: {e}");
                ExitCode::from(2)
            }
        };
    }
    match cli.command {
        Command::Check { dir, events } => check(&dir, events.as_deref()),
        Command::Simulate {
            dir,
            events,
            until,
            compare: Some(candidate),
            format,
            limit,
            ..
        } => compare(&dir, &candidate, &events, until.as_deref(), format, limit),
        Command::Simulate {
            dir,
            events,
            until,
            explain,
            ..
        } => simulate(&dir, &events, until.as_deref(), explain),
        Command::Test { dir } => test(&dir),
        Command::Plugin(PluginCommand::Run(a)) => plugin::run(a),
        Command::Gen {
            leads,
            events,
            seed,
            start,
            span,
        } => gen(leads, events, seed, &start, span.as_deref()),
        Command::Serve(_) => unreachable!("served above"),
        Command::Migrate {
            database_url,
            database_url_file,
            partitions,
        } => match database_url_from(&matches, "migrate", database_url, database_url_file) {
            Ok(url) => migrate(&url, partitions),
            Err(code) => code,
        },
        Command::Replay(a) => replay::run(a),
        Command::Prune(a) => ops::prune(a),
        Command::Outbox(c) => ops::outbox(c),
        Command::Import {
            file,
            url,
            api_token,
        } => import::run(&file, &url, api_token.as_deref()),
        Command::Doctor {
            database_url,
            database_url_file,
            retry,
        } => match database_url_from(&matches, "doctor", database_url, database_url_file) {
            Ok(url) => doctor(&url, retry.as_deref()),
            Err(code) => code,
        },
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::api::openapi()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::rules::config::schema()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
    }
}

fn gen(leads: usize, events: u64, seed: u64, start: &str, span: Option<&str>) -> ExitCode {
    use std::io::Write as _;
    let Ok(start) = crate::model::time::parse(start) else {
        eprintln!("--start {start:?}: not an RFC 3339 time (e.g. 2026-01-01T00:00:00Z)");
        return ExitCode::from(2);
    };
    let mut stream = crate::sim::gen::Gen::new(seed, leads, start);
    if let Some(span) = span {
        match span.parse::<crate::rules::config::DurationSpec>() {
            Ok(d) => stream = stream.with_span(events, d.0),
            Err(e) => {
                eprintln!("--span: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let out = std::io::stdout().lock();
    let mut out = std::io::BufWriter::new(out);
    for e in stream.take(events as usize) {
        if writeln!(out, "{}", e.to_json()).is_err() {
            // The reader went away (e.g. `| head`): stop quietly.
            return ExitCode::SUCCESS;
        }
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}

pub(crate) fn load(dir: &Path) -> Result<Ruleset, ExitCode> {
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

fn check(dir: &Path, events: Option<&Path>) -> ExitCode {
    match load(dir) {
        Ok(rules) => {
            // Warnings first, and they never fail the check.
            if let Some(path) = events {
                match std::fs::read_to_string(path) {
                    Ok(text) => {
                        let types = EventTypes::read_str(&path.display().to_string(), &text);
                        for w in rules.event_warnings(&types) {
                            eprintln!("{w}");
                        }
                    }
                    Err(e) => {
                        eprintln!("{}: cannot read: {e}", path.display());
                        return ExitCode::from(2);
                    }
                }
            }
            let diags = plugin::check(&rules);
            if !diags.is_empty() {
                for d in &diags {
                    eprintln!("{d}");
                }
                let n = diags.len();
                eprintln!(
                    "{n} error{} in {}",
                    if n == 1 { "" } else { "s" },
                    dir.display()
                );
                return ExitCode::FAILURE;
            }
            println!("{} ok: {}", dir.display(), rules.summary());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// How a comparison is printed.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

/// `simulate --compare`: the same events through the rules in force and a
/// candidate, side by side (one thread each), and what differs.
fn compare(
    dir: &Path,
    candidate: &Path,
    events: &Path,
    until: Option<&str>,
    format: Format,
    limit: usize,
) -> ExitCode {
    let (base, cand) = match (load(dir), load(candidate)) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let until = match parse_until(until) {
        Ok(u) => u,
        Err(code) => return code,
    };
    let evs = match sim::read_events_file(events) {
        Ok(e) => e,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    match compared(&base, &cand, &evs, until) {
        Ok(report) => print_comparison(&report, format, limit),
        Err(code) => code,
    }
}

/// Runs `evs` through `base` and `cand` side by side (one thread each,
/// each with its own plugins) up to `until`, and compares the leads.
pub(crate) fn compared(
    base: &Ruleset,
    cand: &Ruleset,
    evs: &[crate::model::Event],
    until: Option<time::Timestamp>,
) -> Result<sim::compare::Comparison, ExitCode> {
    let (bh, ch) = match (plugin::host(base), plugin::host(cand)) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(code), _) | (_, Err(code)) => return Err(code),
    };
    fn eval<'r>(rules: &'r Ruleset, host: &'r Option<crate::plugins::Host>) -> Evaluator<'r> {
        match host {
            Some(h) => Evaluator::with_plugins(rules, h),
            None => Evaluator::new(rules),
        }
    }
    let never = std::sync::atomic::AtomicBool::new(false);
    sim::compare::run_both(eval(base, &bh), eval(cand, &ch), evs, until, &never).ok_or_else(|| {
        eprintln!("the comparison did not finish");
        ExitCode::FAILURE
    })
}

pub(crate) fn print_comparison(
    report: &sim::compare::Comparison,
    format: Format,
    limit: usize,
) -> ExitCode {
    let out = match format {
        Format::Text => sim::compare::text(report, limit),
        Format::Json => sim::compare::json_lines(report),
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// `--until`: a time or a date; exit 2 with the forms it takes otherwise.
pub(crate) fn parse_until(until: Option<&str>) -> Result<Option<time::Timestamp>, ExitCode> {
    match until.map(|u| (u, time::parse_time_or_date(u))) {
        None => Ok(None),
        Some((_, Ok(t))) => Ok(Some(t)),
        Some((u, Err(e))) => {
            eprintln!(
                "--until: {u:?} is neither a date (2026-02-20) nor an RFC 3339 time such as 2026-02-20T00:00:00Z ({e})"
            );
            Err(ExitCode::from(2))
        }
    }
}

/// How `simulate --explain` tells a lead's story.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Explain {
    Text,
    Json,
}

fn simulate(dir: &Path, events: &Path, until: Option<&str>, explain: Option<Explain>) -> ExitCode {
    let rules = match load(dir) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let until = match parse_until(until) {
        Ok(u) => u,
        Err(code) => return code,
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
    let host = match plugin::host(&rules) {
        Ok(h) => h,
        Err(code) => return code,
    };
    let eval = match &host {
        Some(h) => Evaluator::with_plugins(&rules, h),
        None => Evaluator::new(&rules),
    };
    let eval = Evaluator {
        explain: explain.is_some(),
        ..eval
    };
    let mut world = World::new(eval);
    if explain.is_some() {
        world.explain();
    }
    world.run(&mut evs, until);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for lead in world.in_order() {
        let story = world.stories.as_ref().map_or(&[][..], |s| s.of(&lead.id));
        let written = match explain {
            None => writeln!(out, "{}", sim::lead_line(lead)),
            Some(Explain::Text) => writeln!(out, "{}", sim::explain::story_text(lead, story)),
            Some(Explain::Json) => {
                let mut line = sim::lead_detail(lead);
                line["timeline"] = story.iter().map(sim::explain::entry_json).collect();
                writeln!(out, "{line}")
            }
        };
        if written.is_err() {
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
    let host = match plugin::host(&rules) {
        Ok(h) => h,
        Err(code) => return code,
    };
    let plugins = host.as_ref().map(|h| h as &dyn crate::eval::PluginHost);
    let results = match crate::ruletest::run_dir_with(&rules, dir, plugins) {
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
            for p in &r.problems {
                println!("  at run time: {p}");
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

pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// An API token that is set but empty (`NURTURE_API_TOKEN=`, which clap
/// takes as unset, or `--api-token ""`) would silently mean "no auth":
/// refused, saying how to mean it.
fn empty_api_token(given: Option<&str>) -> Option<&'static str> {
    let env_empty = std::env::var_os("NURTURE_API_TOKEN")
        .is_some_and(|v| v.to_string_lossy().trim().is_empty());
    match given {
        Some(t) if !t.trim().is_empty() => None,
        Some(_) if env_empty => Some("NURTURE_API_TOKEN is set but empty"),
        Some(_) => Some("--api-token is empty"),
        None if env_empty => Some("NURTURE_API_TOKEN is set but empty"),
        None => None,
    }
}

/// The database URL of `migrate` or `doctor`, from `--database-url-file`
/// when that is given at a higher level (flag > variable) than the URL.
fn database_url_from(
    matches: &clap::ArgMatches,
    command: &str,
    url: String,
    file: Option<PathBuf>,
) -> Result<String, ExitCode> {
    let m = matches.subcommand_matches(command).unwrap_or(matches);
    config::secret(
        m,
        &Default::default(),
        ("database_url", "database_url_file"),
        Some(url),
        file.as_deref(),
    )
    .map(Option::unwrap_or_default)
    .map_err(|e| {
        eprintln!("nurture {command}: {e}");
        ExitCode::from(2)
    })
}

/// `serve`'s settings with the config file's (for what no flag or variable
/// set) and the secrets read from their files.
fn serve_settings(
    a: ServeArgs,
    matches: &clap::ArgMatches,
) -> Result<ServeArgs, config::ConfigError> {
    let sub = matches.subcommand_matches("serve").unwrap_or(matches);
    let (mut a, m, from_file) = match a.config.clone() {
        None => (a, sub.clone(), Default::default()),
        Some(file) => {
            let cmd = Cli::command();
            let serve = cmd
                .find_subcommand("serve")
                .cloned()
                .unwrap_or_else(|| clap::Command::new("serve"));
            let (extra, from_file) = config::file_args(&serve, sub, &file)?;
            let argv: Vec<std::ffi::OsString> = std::env::args_os().chain(extra).collect();
            let all = Cli::command()
                .try_get_matches_from(argv)
                .unwrap_or_else(|e| e.exit());
            let sub = all.subcommand_matches("serve").cloned().unwrap_or(all);
            let a = ServeArgs::from_arg_matches(&sub).unwrap_or_else(|e| e.exit());
            (a, sub, from_file)
        }
    };
    a.api_token = config::secret(
        &m,
        &from_file,
        ("api_token", "api_token_file"),
        a.api_token.take(),
        a.api_token_file.as_deref(),
    )?;
    a.secret = config::secret(
        &m,
        &from_file,
        ("secret", "secret_file"),
        a.secret.take(),
        a.secret_file.as_deref(),
    )?;
    a.smtp_url = config::secret(
        &m,
        &from_file,
        ("smtp_url", "smtp_url_file"),
        a.smtp_url.take(),
        a.smtp_url_file.as_deref(),
    )?;
    if let Some(url) = config::secret(
        &m,
        &from_file,
        ("database_url", "database_url_file"),
        Some(std::mem::take(&mut a.database_url)),
        a.database_url_file.as_deref(),
    )? {
        a.database_url = url;
    }
    Ok(a)
}

fn serve(a: ServeArgs) -> ExitCode {
    crate::serve::init_logging(a.log_json);
    if let Some(what) = empty_api_token(a.api_token.as_deref()) {
        eprintln!(
            "nurture serve: {what}: give a token, or leave it out entirely (unset the \
             variable) to run without one, on loopback only"
        );
        return ExitCode::FAILURE;
    }
    let cfg = crate::serve::ServeConfig {
        database_url: a.database_url,
        rules: a.rules,
        listen: a.listen,
        api_token: a.api_token,
        write_keys: a.write_keys,
        write_keys_file: a.write_keys_file,
        cors_origins: a.cors_origins,
        smtp_url: a.smtp_url,
        outbox: a.outbox,
        public_url: a.public_url,
        secret: a.secret,
        log_json: a.log_json,
        stall_after: a.stall_after.0.to_std().unwrap_or(Duration::from_secs(30)),
        ready_max_lag: a
            .ready_max_lag
            .0
            .to_std()
            .unwrap_or(crate::daemon::health::READY_MAX_LAG),
        max_batch: a.max_batch,
        workers: usize::from(a.workers),
        partitions: a.partitions,
        routing_window: a
            .routing_window
            .map(|w| w.0.to_std().unwrap_or(Duration::ZERO)),
        allowed_lateness: a.allowed_lateness.0.to_std().unwrap_or(Duration::ZERO),
        retention: a
            .retention
            .settings(a.allowed_lateness.0.to_std().unwrap_or(Duration::ZERO)),
        prune_every: a
            .prune_every
            .0
            .to_std()
            .unwrap_or(Duration::from_secs(600))
            .max(Duration::from_millis(100)),
        hold_outbox: a.hold_outbox,
        http: crate::api::server::HttpSettings {
            header_timeout: a
                .header_timeout
                .0
                .to_std()
                .unwrap_or(Duration::from_secs(30)),
            max_connections: a.max_connections,
            shutdown_timeout: a
                .shutdown_timeout
                .0
                .to_std()
                .unwrap_or(Duration::from_secs(10)),
            auth_failures_per_minute: a.auth_failures_per_minute,
            ingest_per_key: a.ingest_per_key,
            ingest_per_address: a.ingest_per_address,
        },
        clock: crate::clock::Clock::system(),
    };
    let result = runtime()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(crate::serve::serve(cfg)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nurture serve: {}", crate::redact::text(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// The machine's cores, at most 4 (more workers than cores only contend).
fn default_workers() -> u16 {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4) as u16)
}

fn migrate(url: &str, partitions: u32) -> ExitCode {
    let result = runtime().map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async {
            let store = crate::store::Store::connect(url).await?;
            store.migrate_with(partitions).await?;
            anyhow::Ok(())
        })
    });
    match result {
        Ok(()) => {
            println!("{}: schema up to date", crate::redact::url(url));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "nurture migrate: {}",
                crate::redact::text(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}

/// `nurture doctor`: exit 0 when no lead is in quarantine (or the one to
/// retry was released), 1 when leads are listed (or the retry found none).
fn doctor(url: &str, retry: Option<&str>) -> ExitCode {
    let result = runtime().map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async {
            // Connect only: changing the schema is `serve`'s and `migrate`'s.
            let store = crate::store::Store::connect(url).await?;
            match retry {
                Some(lead) => {
                    let released = store.release(lead, chrono::Utc::now()).await?;
                    anyhow::Ok(if released {
                        println!("{lead}: released from quarantine; a running daemon applies its waiting events now");
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("{lead}: not in quarantine");
                        ExitCode::FAILURE
                    })
                }
                None => {
                    let leads = store.quarantined().await?;
                    if leads.is_empty() {
                        println!("{}: no leads in quarantine", crate::redact::url(url));
                        return Ok(ExitCode::SUCCESS);
                    }
                    println!("{} lead{} in quarantine:", leads.len(), if leads.len() == 1 { "" } else { "s" });
                    for q in &leads {
                        println!(
                            "{}\tsince {}\t{} event{} waiting\t{}",
                            q.lead,
                            time::format(&q.at),
                            q.events_pending,
                            if q.events_pending == 1 { "" } else { "s" },
                            q.cause
                        );
                    }
                    println!("fix the cause, then: nurture doctor --retry LEAD");
                    Ok(ExitCode::FAILURE)
                }
            }
        })
    });
    result.unwrap_or_else(|e| {
        eprintln!("nurture doctor: {}", crate::redact::text(&format!("{e:#}")));
        ExitCode::from(2)
    })
}
