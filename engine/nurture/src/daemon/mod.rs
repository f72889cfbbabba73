//! `nurture serve`: the long-running daemon around the evaluator. It accepts
//! events over HTTP (`api`), keeps them and all state in the database
//! (`store`), applies them and due work in order (`processor`), reloads rules
//! when they change (`reload`), and stops cleanly on SIGTERM.

mod ingest;
pub mod metrics;
pub use ingest::IngestError;
pub mod processor;
mod reload;
pub mod retry;

use crate::email::{Composer, Links, Secret, Transport};
use crate::rules::Ruleset;
use crate::store::Store;
use anyhow::Context as _;
use metrics::Metrics;
use retry::Retries;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// A ruleset with its plugins loaded and its templates ready.
pub struct Active {
    pub rules: Ruleset,
    pub plugins: Option<crate::plugins::Host>,
    pub composer: Composer,
}

impl Active {
    /// Loads the ruleset's plugins. A plugin that cannot be loaded is logged;
    /// its calls fail (and are recorded) while the other rules run.
    pub fn new(rules: Ruleset, links: &Links) -> anyhow::Result<Active> {
        let composer = Composer::new(&rules, links.clone());
        if rules.plugins.is_empty() {
            return Ok(Active {
                rules,
                plugins: None,
                composer,
            });
        }
        let host = crate::plugins::Host::new(&rules.plugins, crate::plugins::Options::default())
            .map_err(anyhow::Error::msg)?;
        for p in &rules.plugins {
            if let Some(e) = host.load_error(&p.name) {
                tracing::error!(plugin = %p.name, "{}: plugin cannot be loaded: {e}", p.wasm_at);
            }
        }
        Ok(Active {
            rules,
            plugins: Some(host),
            composer,
        })
    }

    pub fn evaluator(&self) -> crate::eval::Evaluator<'_> {
        crate::eval::Evaluator {
            rules: &self.rules,
            plugins: self
                .plugins
                .as_ref()
                .map(|h| h as &dyn crate::eval::PluginHost),
        }
    }
}

/// The rules in force; replaced whole on reload.
#[derive(Clone)]
pub struct RulesHandle(Arc<RwLock<Arc<Active>>>);

impl RulesHandle {
    pub fn new(active: Active) -> Self {
        RulesHandle(Arc::new(RwLock::new(Arc::new(active))))
    }
    pub fn current(&self) -> Arc<Active> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
    pub fn replace(&self, active: Active) {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *g = Arc::new(active);
    }
}

/// Everything `serve` is told.
#[derive(Clone, Debug)]
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
}

/// Shared by the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub rules: RulesHandle,
    pub metrics: Arc<Metrics>,
    /// Wakes the processor when events arrive.
    pub wake: Arc<Notify>,
    /// Writes accepted events, grouping concurrent requests.
    pub ingest: ingest::Ingestor,
    /// The API token, write keys and allowed origins.
    pub access: Arc<crate::api::access::Access>,
    /// Verifies unsubscribe tokens.
    pub secret: Secret,
    /// See [`ServeConfig::stall_after`].
    pub stall_after: Duration,
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
fn access(cfg: &ServeConfig) -> anyhow::Result<crate::api::access::Access> {
    use crate::api::access::{Access, Origins};
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

pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NURTURE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
        .with_context(|| format!("connecting to {}", cfg.database_url))?;
    store.migrate().await.context("running migrations")?;
    let local = listener.local_addr()?;
    let links = links(&cfg, &store, local).await?;
    let transport = Transport::new(cfg.smtp_url.as_deref(), &cfg.outbox)?;
    tracing::info!(transport = %transport.describe(), public_url = %links.base_url, "email");

    let links_for_rules = links.clone();
    let active =
        tokio::task::spawn_blocking(move || Active::new(rules, &links_for_rules)).await??;
    let handle = RulesHandle::new(active);
    let metrics = Arc::new(Metrics::default());
    let wake = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);

    let processor = processor::Processor {
        store: store.clone(),
        rules: handle.clone(),
        metrics: metrics.clone(),
    };
    let proc_task = tokio::spawn(run_processor(
        processor,
        metrics.clone(),
        wake.clone(),
        stop_rx.clone(),
    ));
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
    };
    let sender_task = tokio::spawn(sender.run(stop_rx.clone()));
    let webhook_task = tokio::spawn(crate::webhooks::deliver::run(
        store.clone(),
        handle.clone(),
        metrics.clone(),
        stop_rx.clone(),
    ));
    let keys_task = tokio::spawn(crate::api::access::watch(access.clone(), stop_rx.clone()));
    let gauge_task = tokio::spawn(update_gauges(
        store.clone(),
        metrics.clone(),
        stop_rx.clone(),
    ));

    let ingest = ingest::Ingestor::start(store.clone(), metrics.clone());
    let state = AppState {
        store,
        rules: handle,
        metrics,
        wake,
        ingest,
        access,
        secret: links.secret.clone(),
        stall_after: cfg.stall_after,
    };
    let app = crate::api::router(state);
    tracing::info!(%local, "listening");
    ready(local);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;

    tracing::info!("shutting down: finishing in-flight work");
    let _ = stop_tx.send(true);
    let _ = proc_task.await;
    let _ = reload_task.await;
    let _ = sender_task.await;
    let _ = gauge_task.await;
    let _ = keys_task.await;
    let _ = webhook_task.await;
    tracing::info!("stopped");
    Ok(())
}

async fn run_processor(
    p: processor::Processor,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut retries = Retries::default();
    loop {
        if *stop.borrow() {
            return;
        }
        match p.step(chrono::Utc::now()).await {
            Ok(n) if n > 0 => {
                retries.succeeded();
                metrics.storage_ok();
                metrics.processor_advanced();
                continue;
            }
            Ok(_) => {
                retries.succeeded();
                metrics.processor_advanced();
            }
            Err(e) => {
                // Nothing of the step was written; it is done again, whole.
                let wait = retries.failed("processing step", &e, &metrics);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        }
        // Idle: wait for new events, due work (checked every quarter second), or stop.
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn update_gauges(store: Store, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Ok((pending, due)) = store.queue_depth().await {
            metrics.events_pending.set(pending);
            metrics.due_work.set(due);
        }
        if let Ok(n) = store.quarantine_count().await {
            metrics.leads_quarantined.set(n);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
