//! The composition root of `nurture serve`: builds the services (store,
//! rules, processor, outbox workers, reload loop, HTTP API), spawns them,
//! and stops them cleanly on SIGTERM. Nothing imports this but `cli`, which
//! calls [`serve`]; the services themselves live in `daemon/`, `email/`,
//! `webhooks/`, `api/` and `store/`, and know nothing of each other's wiring.

use crate::api::access::{Access, Origins};
use crate::api::limit::{AuthFailures, IngestLimits};
use crate::api::server::{self, HttpSettings};
use crate::api::AppState;
use crate::clock::Clock;
use crate::daemon::health::Health;
use crate::daemon::metrics::Metrics;
use crate::daemon::partitions::Partitions;
use crate::daemon::processor::Processor;
use crate::daemon::rules::{Active, RulesHandle};
use crate::daemon::{leases, reload, worker};
use crate::email::{Links, Secret, Transport};
use crate::rules::Ruleset;
use crate::store::{Backend, Ingestor, Store};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Everything `serve` is told.
#[derive(Clone)]
pub struct ServeConfig {
    pub database_url: String,
    pub rules: PathBuf,
    pub listen: String,
    pub api_token: Option<String>,
    /// Write keys for the ingest routes (`--write-key`, `NURTURE_WRITE_KEYS`).
    pub write_keys: Vec<String>,
    /// More write keys, one a line, re-read when the file changes.
    pub write_keys_file: Option<PathBuf>,
    /// Browser origins allowed to send events (CORS); `*` for any.
    pub cors_origins: Vec<String>,
    pub smtp_url: Option<String>,
    pub outbox: PathBuf,
    pub public_url: Option<String>,
    pub secret: Option<String>,
    pub log_json: bool,
    /// `/healthz` says `degraded` when the processor has neither committed
    /// a step nor found nothing to do for this long (`--stall-after`).
    pub stall_after: Duration,
    /// `/readyz` says not ready when the oldest waiting event or overdue
    /// work is older than this (`--ready-max-lag`).
    pub ready_max_lag: Duration,
    /// Most events a processing step grows to under a backlog (`--max-batch`).
    pub max_batch: i64,
    /// Workers stepping partitions side by side (`--workers`).
    pub workers: usize,
    /// Partitions a new database is made with (`--partitions`); a database
    /// keeps the number it was made with.
    pub partitions: u32,
    /// Routing decisions wait for other partitions' work from more than
    /// this much earlier (`--routing-window`; zero: exactly in time order;
    /// `None`: they never wait, and go in the order steps commit).
    pub routing_window: Option<Duration>,
    /// How late an event may arrive and still take its place in its lead's
    /// history (`--allowed-lateness`): the lead is re-folded.
    pub allowed_lateness: Duration,
    /// How long each kind of history is kept (docs/operations.md).
    pub retention: crate::daemon::pruner::Retention,
    /// How often the pruner runs (`--prune-every`).
    pub prune_every: Duration,
    /// Hold the outbox at start (`--hold-outbox`, after a restore): nothing
    /// pending is sent until an operator releases or cancels it.
    pub hold_outbox: bool,
    /// The HTTP server's timeouts and limits.
    pub http: HttpSettings,
    /// What time it is for the daemon: the system clock unless a test
    /// puts in its own.
    pub clock: Clock,
}

/// Secrets shown as `***`: a config printed while debugging leaks nothing.
impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("ServeConfig")
            .field("database_url", &crate::redact::url(&self.database_url))
            .field("rules", &self.rules)
            .field("listen", &self.listen)
            .field("api_token", &hidden(&self.api_token))
            .field("write_keys", &self.write_keys.len())
            .field("write_keys_file", &self.write_keys_file)
            .field("cors_origins", &self.cors_origins)
            .field(
                "smtp_url",
                &self.smtp_url.as_deref().map(crate::redact::url),
            )
            .field("outbox", &self.outbox)
            .field("public_url", &self.public_url)
            .field("secret", &hidden(&self.secret))
            .field("log_json", &self.log_json)
            .field("stall_after", &self.stall_after)
            .field("ready_max_lag", &self.ready_max_lag)
            .field("max_batch", &self.max_batch)
            .field("workers", &self.workers)
            .field("partitions", &self.partitions)
            .field("routing_window", &self.routing_window)
            .field("allowed_lateness", &self.allowed_lateness)
            .field("retention", &self.retention)
            .field("prune_every", &self.prune_every)
            .field("hold_outbox", &self.hold_outbox)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

/// Where links in emails point and the key that signs them: `--public-url`
/// (default: the listen address) and `--secret` (default: a random key made
/// once and kept in the database, so links stay valid across restarts).
async fn links(cfg: &ServeConfig, store: &Store, local: SocketAddr) -> anyhow::Result<Links> {
    let base_url = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"))
        .trim_end_matches('/')
        .to_string();
    let secret = match &cfg.secret {
        Some(s) if !s.is_empty() => s.clone(),
        _ => {
            let generated = random_hex(32).context("generating the link-signing secret")?;
            store
                .setting_or_init("link_secret", &generated)
                .await
                .context("storing the link-signing secret")?
        }
    };
    Ok(Links {
        base_url,
        secret: Secret::new(secret.into_bytes()),
    })
}

/// The credentials and origins `serve` was given, every one checked.
fn access(cfg: &ServeConfig) -> anyhow::Result<Access> {
    let origins = Origins::parse(&cfg.cors_origins)?;
    Access::new(
        cfg.api_token.clone(),
        &cfg.write_keys,
        cfg.write_keys_file.clone(),
        origins,
    )
    .map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("write keys:\n{}", lines.join("\n"))
    })
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The log filter: `NURTURE_LOG` (default `info`), with sqlx's per-query
/// lines left out (`sqlx=warn`: slow statements are still logged) unless
/// the filter names sqlx itself. At `debug` they were nearly every line.
pub fn log_filter(given: Option<&str>) -> String {
    let given = given
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    if given.contains("sqlx") {
        given.to_string()
    } else {
        format!("{given},sqlx=warn")
    }
}

pub fn init_logging(json: bool) {
    let given = std::env::var("NURTURE_LOG").ok();
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(given.as_deref()))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let addr: SocketAddr = tokio::net::lookup_host(&cfg.listen)
        .await
        .with_context(|| format!("--listen {}", cfg.listen))?
        .next()
        .with_context(|| format!("--listen {}: no address", cfg.listen))?;
    if cfg.api_token.is_none() && !addr.ip().is_loopback() {
        anyhow::bail!("--listen {addr}: without --api-token (NURTURE_API_TOKEN) Nurture only listens on loopback");
    }
    match server::raise_nofile_limit() {
        Some((before, after)) if after > before => {
            tracing::info!(
                from = before,
                to = after,
                "raised the open-files limit (RLIMIT_NOFILE)"
            )
        }
        Some((_, now)) => tracing::debug!(limit = now, "open-files limit (RLIMIT_NOFILE)"),
        None => {}
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    run(cfg, listener, shutdown_signal(), |local| {
        // On stdout so scripts (and tests) can find the port when it was 0.
        println!("nurture listening on http://{local}");
    })
    .await
}

/// Runs the daemon on `listener` until `shutdown` completes, then finishes
/// in-flight work. `ready` is called once requests are being served.
pub async fn run(
    cfg: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let rules = Ruleset::load(&cfg.rules)
        .map_err(|d| anyhow::anyhow!("rules in {} have errors:\n{d}", cfg.rules.display()))?;
    let access = Arc::new(access(&cfg)?);
    tracing::info!(access = %access.describe(), "credentials");
    tracing::info!(rules = %cfg.rules.display(), summary = %rules.summary(), "rules loaded");
    let store = Store::connect(&cfg.database_url)
        .await
        .with_context(|| format!("connecting to {}", crate::redact::url(&cfg.database_url)))?;
    store
        .migrate_with(cfg.partitions)
        .await
        .context("running migrations")?;
    if cfg.hold_outbox {
        let already = store
            .hold_outbox(cfg.clock.now())
            .await
            .context("holding the outbox")?;
        tracing::warn!(
            already,
            "the outbox is held (--hold-outbox): nothing pending is sent until `nurture outbox release` (or `cancel`)"
        );
    } else if let Some(since) = store
        .outbox_hold()
        .await
        .context("reading the outbox hold")?
    {
        tracing::warn!(%since, "the outbox is held: nothing pending is sent until `nurture outbox release` (or `cancel`)");
    }
    let local = listener.local_addr()?;
    let links = links(&cfg, &store, local).await?;
    let transport = Transport::new(cfg.smtp_url.as_deref(), &cfg.outbox)?;
    tracing::info!(transport = %transport.describe(), public_url = %links.base_url, "email");
    let email = transport.describe();

    let links_for_rules = links.clone();
    let active =
        tokio::task::spawn_blocking(move || Active::new(rules, &links_for_rules)).await??;
    let handle = RulesHandle::new(active);
    let health = Arc::new(
        Health::new(cfg.clock.clone(), cfg.stall_after).with_ready_max_lag(cfg.ready_max_lag),
    );
    let metrics = Arc::new(Metrics::new(health.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);

    let processor = Arc::new(Processor {
        store: store.clone(),
        rules: handle.clone(),
        metrics: metrics.clone(),
        clock: cfg.clock.clone(),
        max_batch: cfg.max_batch,
        routing_window_ms: cfg
            .routing_window
            .map(|w| i64::try_from(w.as_millis()).unwrap_or(i64::MAX)),
        allowed_lateness_ms: i64::try_from(cfg.allowed_lateness.as_millis()).unwrap_or(i64::MAX),
    });
    // SQLite has one daemon, holding every partition; on PostgreSQL the
    // daemons lease them among themselves.
    let leased = store.backend == Backend::Postgres;
    let every: Vec<i64> = (0..i64::from(store.partition_count())).collect();
    let partitions = Arc::new(Partitions::new(if leased { Vec::new() } else { every }));
    let daemon_id = format!(
        "{}-{}",
        std::process::id(),
        random_hex(4).context("naming this daemon")?
    );
    tracing::info!(
        partitions = store.partition_count(),
        workers = cfg.workers,
        daemon = %daemon_id,
        "processing"
    );
    let lease_task = leased.then(|| {
        tokio::spawn(leases::run(
            store.clone(),
            partitions.clone(),
            daemon_id,
            stop_rx.clone(),
        ))
    });
    let proc_tasks: Vec<_> = (0..cfg.workers.max(1))
        .map(|w| {
            tokio::spawn(worker::run(
                w,
                processor.clone(),
                partitions.clone(),
                metrics.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let reload_task = tokio::spawn(reload::watch(
        cfg.rules.clone(),
        handle.clone(),
        links.clone(),
        metrics.clone(),
        stop_rx.clone(),
    ));
    let sender = crate::email::sender::Sender {
        store: store.clone(),
        transport: Arc::new(transport),
        metrics: metrics.clone(),
        clock: cfg.clock.clone(),
    };
    let sender_task = tokio::spawn(sender.run(stop_rx.clone()));
    let webhook_task = tokio::spawn(crate::webhooks::deliver::run(
        store.clone(),
        handle.clone(),
        metrics.clone(),
        cfg.clock.clone(),
        stop_rx.clone(),
    ));
    let keys_task = tokio::spawn(crate::api::access::watch(access.clone(), stop_rx.clone()));
    let prune_task = tokio::spawn(crate::daemon::pruner::run(
        store.clone(),
        cfg.retention.clone(),
        cfg.prune_every,
        cfg.clock.clone(),
        metrics.clone(),
        stop_rx.clone(),
    ));

    let auth = access.describe();
    let ingest = Ingestor::start(store.clone(), metrics.clone());
    // The schema's version, for the start line.
    let schema = store.schema_version().await.unwrap_or_default();
    let state = AppState {
        store,
        rules: handle,
        metrics,
        health,
        partitions,
        ingest,
        access,
        auth_failures: Arc::new(AuthFailures::new(cfg.http.auth_failures_per_minute)),
        ingest_limits: Arc::new(IngestLimits::new(
            cfg.http.ingest_per_key,
            cfg.http.ingest_per_address,
        )),
        secret: links.secret.clone(),
        clock: cfg.clock.clone(),
        // Candidates beside the rules in force (`rules/` and `candidate/`).
        previews: Arc::new(crate::api::preview::Previews::new(
            cfg.rules
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        )),
    };
    let app = crate::api::router(state);
    // One line saying what this daemon is and runs against.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        %local,
        database = %crate::redact::url(&cfg.database_url),
        schema,
        %email,
        %auth,
        "listening"
    );
    ready(local);
    server::serve(listener, app, cfg.http, shutdown).await;

    tracing::info!("shutting down: finishing in-flight work");
    let _ = stop_tx.send(true);
    for task in proc_tasks {
        let _ = task.await;
    }
    if let Some(task) = lease_task {
        let _ = task.await;
    }
    let _ = reload_task.await;
    let _ = sender_task.await;
    let _ = prune_task.await;
    let _ = keys_task.await;
    let _ = webhook_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM or Ctrl-C. The handlers are installed here, when it is called,
/// not when the future is first polled: a signal that arrives after
/// "listening" is printed must start a graceful shutdown, not kill the
/// process with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {}
                _ = wait(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_filter_leaves_sqlx_queries_out_unless_asked() {
        assert_eq!(log_filter(None), "info,sqlx=warn");
        assert_eq!(log_filter(Some("debug")), "debug,sqlx=warn");
        assert_eq!(log_filter(Some("debug,sqlx=debug")), "debug,sqlx=debug");
    }

    #[test]
    fn debug_hides_secrets() {
        let cfg = ServeConfig {
            database_url: "postgres://app:hunter2@db/n".into(),
            rules: "rules".into(),
            listen: "127.0.0.1:0".into(),
            api_token: Some("tok-hunter2".into()),
            write_keys: vec!["wk-hunter2".into()],
            write_keys_file: None,
            cors_origins: Vec::new(),
            smtp_url: Some("smtp://m:hunter2@mail".into()),
            outbox: "outbox".into(),
            public_url: None,
            secret: Some("sec-hunter2".into()),
            log_json: false,
            stall_after: Duration::from_secs(30),
            ready_max_lag: Duration::from_secs(300),
            max_batch: 100,
            workers: 2,
            partitions: 16,
            routing_window: None,
            allowed_lateness: Duration::from_secs(3600),
            retention: crate::daemon::pruner::Retention::default(),
            prune_every: Duration::from_secs(600),
            hold_outbox: false,
            http: HttpSettings::default(),
            clock: Clock::system(),
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://app:***@db/n"), "{shown}");
    }
}
