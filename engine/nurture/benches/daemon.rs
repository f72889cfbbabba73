//! The daemon under load, on this machine, over real HTTP on loopback:
//! `cargo bench --bench daemon`. SQLite always; PostgreSQL too when
//! `NURTURE_TEST_DATABASE_URL` names a server (a `nurture_bench` database is
//! made on it). Prints one summary line per figure. Knobs (environment):
//! `NURTURE_BENCH_WORKERS` (2), `NURTURE_BENCH_PARTITIONS` (16),
//! `NURTURE_BENCH_ROUTING_WINDOW_SECS` (unset: routing never waits), `NURTURE_BENCH_EVENTS` (100,000),
//! `NURTURE_BENCH_LEADS` (5,000), `NURTURE_BENCH_ALLOWED_LATENESS_SECS` (3600),
//! `NURTURE_BENCH_BATCH_ONLY=1` (figure 1 only), `NURTURE_BENCH_DAEMONS` (1: on
//! PostgreSQL, this many daemons share the work: the others are processes of
//! the release binary on the same database, leasing partitions).
//!
//! 1. batch ingest: 100,000 events in batches of 500 from 4 clients; the rate
//!    at which they are acknowledged (durable), and at which they are applied;
//!    on SQLite also the same rows inserted by a plain sqlx loop, for scale;
//! 2. single-event POSTs from 4 clients;
//! 3. event-to-stage-change latency: probes that move a new lead to `lead`,
//!    sent while a background load of 1,000 events/s runs; p50 and p99 from
//!    sending the event to reading the new stage back.

use nurture::serve::{run, ServeConfig};
use nurture::sim::gen;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut backends = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("bench.db").display()),
    )];
    if let Ok(base) = std::env::var("NURTURE_TEST_DATABASE_URL") {
        rt.block_on(async {
            use sqlx::Executor;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&base)
                .await
                .unwrap();
            pool.execute("DROP DATABASE IF EXISTS nurture_bench WITH (FORCE)")
                .await
                .unwrap();
            pool.execute("CREATE DATABASE nurture_bench").await.unwrap();
        });
        let (head, _) = base.rsplit_once('/').unwrap();
        backends.push(("postgres", format!("{head}/nurture_bench")));
    }
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    for (name, url) in backends {
        if filter.as_deref().is_some_and(|f| f != name) {
            continue;
        }
        rt.block_on(bench_backend(name, url));
    }
}

/// A number from the environment (the bench's knobs: workers, partitions,
/// routing window, workload size), or `default`.
fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn bench_backend(name: &str, url: String) {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let outbox = tempfile::tempdir().unwrap();
    let cfg = ServeConfig {
        database_url: url.clone(),
        rules: rules.clone(),
        listen: String::new(),
        api_token: None,
        write_keys: Vec::new(),
        write_keys_file: None,
        cors_origins: Vec::new(),
        smtp_url: None,
        // The example rules send drips: keep their .eml files out of the tree.
        outbox: outbox.path().to_path_buf(),
        public_url: None,
        secret: None,
        log_json: false,
        stall_after: std::time::Duration::from_secs(30),
        ready_max_lag: std::time::Duration::from_secs(300),
        max_batch: nurture::daemon::processor::MAX_BATCH,
        workers: setting("NURTURE_BENCH_WORKERS", 2),
        partitions: setting(
            "NURTURE_BENCH_PARTITIONS",
            nurture::store::DEFAULT_PARTITIONS,
        ),
        routing_window: std::env::var("NURTURE_BENCH_ROUTING_WINDOW_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_secs),
        allowed_lateness: std::time::Duration::from_secs(setting(
            "NURTURE_BENCH_ALLOWED_LATENESS_SECS",
            3600,
        )),
        retention: Default::default(),
        prune_every: std::time::Duration::from_secs(600),
        hold_outbox: false,
        http: Default::default(),
        clock: nurture::clock::Clock::system(),
    };
    let server = tokio::spawn(run(
        cfg,
        listener,
        async {
            let _ = stop_rx.await;
        },
        |_| {},
    ));
    let c = reqwest::Client::new();
    wait_ready(&c, &base).await;
    let daemons = if name == "postgres" {
        setting("NURTURE_BENCH_DAEMONS", 1usize).max(1)
    } else {
        1
    };
    let mut others = Vec::new();
    for _ in 1..daemons {
        let other = Other::start(&url, &rules, outbox.path());
        wait_ready(&c, &other.base).await;
        others.push(other);
    }
    if daemons > 1 {
        // Leases are shared out in rounds of a second.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    // 1. Batch ingest, then the time to apply everything.
    let n: usize = setting("NURTURE_BENCH_EVENTS", 100_000);
    let leads: usize = setting("NURTURE_BENCH_LEADS", 5_000);
    let now = chrono::Utc::now();
    let mut events = gen::generate(7, leads, n, now);
    // End the stream now: the events span about two weeks of the past.
    let shift = events.last().unwrap().at - now;
    for e in &mut events {
        e.at -= shift;
    }
    let batches: Vec<Value> = events
        .chunks(500)
        .map(|ch| json!({"batch": ch.iter().map(|e| e.to_json()).collect::<Vec<_>>()}))
        .collect();
    let batches = Arc::new(batches);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (c, base, batches) = (c.clone(), base.clone(), batches.clone());
        tasks.push(tokio::spawn(async move {
            for b in batches.iter().skip(w).step_by(4) {
                let r = c
                    .post(format!("{base}/v1/events"))
                    .json(b)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = start.elapsed();
    wait_drained(&c, &base).await;
    let applied = start.elapsed();
    println!(
        "{name}: batch ingest (500/batch, 4 clients, {leads} leads, {daemons} daemon(s)): {:.0} events/s acknowledged; all applied in {:.1} s = {:.0} events/s processed",
        n as f64 / acked.as_secs_f64(),
        applied.as_secs_f64(),
        n as f64 / applied.as_secs_f64()
    );

    // 1b. The same rows inserted by a plain sqlx loop into a fresh SQLite
    //     file with the same schema and durability: the floor for "store an
    //     event" that ingest (HTTP, JSON, checks, and processing alongside)
    //     is compared with.
    if name == "sqlite" {
        let raw = raw_sqlite_inserts(&events).await;
        let ours = n as f64 / acked.as_secs_f64();
        println!(
            "{name}: plain sqlx insert loop, same {n} rows, a transaction per 500, same schema and synchronous = FULL: {raw:.0} rows/s; nurture's batch ingest reaches {:.0} % of it",
            100.0 * ours / raw
        );
        println!(
            "ingest summary: nurture batch ingest {ours:.0} events/s acknowledged, plain sqlx insert loop {raw:.0} rows/s, SQLite: {:.0} % (target >= 30 %)",
            100.0 * ours / raw
        );
    }

    if setting("NURTURE_BENCH_BATCH_ONLY", 0u8) == 1 {
        let _ = stop_tx.send(());
        let _ = server.await;
        return;
    }

    // 2. One event per POST.
    let m = 4_000;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (c, base) = (c.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..m / 4 {
                let ev = json!({"id": format!("single-{w}-{i}"), "lead": format!("s{}", i % 500), "type": "page_viewed", "properties": {"path": "/docs/x"}});
                let r = c.post(format!("{base}/v1/events")).json(&ev).send().await.unwrap();
                assert_eq!(r.status(), 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "{name}: single-event POSTs (4 clients): {:.0} requests/s",
        m as f64 / start.elapsed().as_secs_f64()
    );
    wait_drained(&c, &base).await;

    // 3. Latency under 1,000 events/s.
    let load = {
        let (c, base) = (c.clone(), base.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for i in 0..12_000u64 {
                tick.tick().await;
                let (c, base) = (c.clone(), base.clone());
                tokio::spawn(async move {
                    let ev = json!({"id": format!("load-{i}"), "lead": format!("bg{}", i % 2000), "type": "page_viewed", "properties": {"path": "/pricing"}});
                    let _ = c.post(format!("{base}/v1/events")).json(&ev).send().await;
                });
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lat = Vec::new();
    for p in 0..400 {
        let id = format!("probe-{p}");
        let t0 = Instant::now();
        let ev = json!({"id": id, "lead": id, "type": "identify", "traits": {"email": format!("{id}@example.com")}});
        c.post(format!("{base}/v1/events"))
            .json(&ev)
            .send()
            .await
            .unwrap();
        loop {
            let r = c.get(format!("{base}/v1/leads/{id}")).send().await.unwrap();
            if r.status() == 200 {
                let v: Value = r.json().await.unwrap();
                if v["stage"] == "lead" {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        lat.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    load.await.unwrap();
    lat.sort();
    let pct =
        |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "{name}: event-to-stage-change latency at 1,000 events/s: p50 {:.1} ms, p99 {:.1} ms ({} probes)",
        pct(0.50),
        pct(0.99),
        lat.len()
    );
    let _ = stop_tx.send(());
    let _ = server.await;
}

/// Inserts `events` into the `events` table of a new SQLite file, one
/// `INSERT` per row, a transaction per 500; returns rows/s.
async fn raw_sqlite_inserts(events: &[nurture::model::Event]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("raw.db").display());
    // The daemon's own connection settings and migrations: the same schema,
    // WAL and synchronous = FULL.
    let store = nurture::store::Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("{url}?mode=rw"))
        .await
        .unwrap();
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("PRAGMA synchronous = FULL")
        .execute(&pool)
        .await
        .unwrap();
    let rows: Vec<(String, String, String, i64, String)> = events
        .iter()
        .map(|e| {
            (
                e.id.clone(),
                e.lead.clone(),
                e.kind.clone(),
                e.at.timestamp_millis(),
                e.to_json().to_string(),
            )
        })
        .collect();
    let now = chrono::Utc::now().timestamp_millis();
    let start = Instant::now();
    for chunk in rows.chunks(500) {
        let mut tx = pool.begin().await.unwrap();
        for (id, lead, kind, at, payload) in chunk {
            sqlx::query(
                "INSERT INTO events (id, lead, type, at, payload, received_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(lead)
            .bind(kind)
            .bind(at)
            .bind(payload)
            .bind(now)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    rows.len() as f64 / start.elapsed().as_secs_f64()
}

async fn wait_ready(c: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if c.get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the daemon did not start");
}

/// Another daemon on the same database: a process of the release binary,
/// stopped when dropped.
struct Other {
    child: std::process::Child,
    base: String,
}

impl Other {
    fn start(url: &str, rules: &Path, outbox: &Path) -> Other {
        use std::io::BufRead;
        let workers = setting("NURTURE_BENCH_WORKERS", 2usize).to_string();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
            .args(["serve", "--database-url", url, "--listen", "127.0.0.1:0"])
            .arg("--rules")
            .arg(rules)
            .arg("--outbox")
            .arg(outbox)
            .args(["--workers", &workers])
            .env("NURTURE_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The address it listens on is its first line on stdout.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split_whitespace()
            .find(|w| w.contains("127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_start_matches("http://")
            .to_string();
        Other {
            child,
            base: format!("http://{addr}"),
        }
    }
}

impl Drop for Other {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_drained(c: &reqwest::Client, base: &str) {
    loop {
        let h: Value = c
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if h["events_pending"] == 0 {
            return;
        }
        // Every 200 ms: the end is known to ±1 % of a 20 s run, and the
        // check's own queries (which walk the pending index) stay a small
        // part of the database's work (at 20 ms they were a fifth of it).
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
