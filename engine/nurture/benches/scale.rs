//! Scale on PostgreSQL: 1M leads, 10M events (`scripts/bench-scale.sh`, or
//! `NURTURE_TEST_DATABASE_URL=postgres://… cargo bench --bench scale`).
//!
//! The daemon runs as its own process (`nurture serve`, the example rules,
//! emails to a temporary outbox) on a fresh `nurture_scale` database, so its
//! memory is measured alone. The events come from the workload generator
//! (seed 11), spread over the 30 days before now, and are posted in batches of
//! 500 by 4 clients while the daemon processes them. Measured:
//! - ingest: events/s acknowledged (durable), over all 10M;
//! - processing: events/s applied while ingesting and after, for
//!   `NURTURE_SCALE_PROCESS_SECS` (600) more seconds or until drained;
//! - the due-work queries the processor runs every step (pending events,
//!   due timers, a tick page of lead ids), timed against the full tables
//!   with the daemon stopped: median and p99 of 200 runs;
//! - the daemon's peak resident memory (VmHWM) and the database's size.
//!
//! Sizes: `NURTURE_SCALE_LEADS`, `NURTURE_SCALE_EVENTS`, `NURTURE_SCALE_SPAN`.
//! Prints one line per figure, then one summary line.

use nurture::sim::gen::Gen;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::Row;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    let Ok(base) = std::env::var("NURTURE_TEST_DATABASE_URL") else {
        println!("scale: skipped (set NURTURE_TEST_DATABASE_URL to a PostgreSQL server)");
        return;
    };
    let leads: usize = env_or("NURTURE_SCALE_LEADS", 1_000_000);
    let events: u64 = env_or("NURTURE_SCALE_EVENTS", 10_000_000);
    let span: String = env_or("NURTURE_SCALE_SPAN", "30d".to_string());
    let process_secs: u64 = env_or("NURTURE_SCALE_PROCESS_SECS", 600);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(base, leads, events, span, process_secs));
}

async fn run(base: String, leads: usize, n: u64, span: String, process_secs: u64) {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&base)
        .await
        .unwrap();
    sqlx::query("DROP DATABASE IF EXISTS nurture_scale WITH (FORCE)")
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE nurture_scale")
        .execute(&admin)
        .await
        .unwrap();
    let (head, _) = base.rsplit_once('/').unwrap();
    let url = format!("{head}/nurture_scale");

    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let outbox = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_nurture"))
            .arg("serve")
            .args(["--database-url", &url])
            .arg("--rules")
            .arg(&rules)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--outbox")
            .arg(outbox.path())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("nurture serve starts"),
    );
    let pid = daemon.0.id();
    let api = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    wait_ready(&c, &api).await;

    // The stream ends now: the daemon runs due work up to the present.
    let span_d = span
        .parse::<nurture::rules::config::DurationSpec>()
        .expect("NURTURE_SCALE_SPAN: a duration such as 30d")
        .0;
    let start = chrono::Utc::now() - span_d;
    let (tx, rx) = async_channel(8);
    let producer = std::thread::spawn(move || {
        let mut stream = Gen::new(11, leads, start).with_span(n, span_d);
        let mut left = n;
        while left > 0 {
            let k = left.min(500);
            left -= k;
            let batch: Vec<Value> = stream
                .by_ref()
                .take(k as usize)
                .map(|e| e.to_json())
                .collect();
            let body = serde_json::to_vec(&json!({ "batch": batch })).unwrap();
            if tx.send_blocking(body).is_err() {
                return;
            }
        }
    });

    let t0 = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (c, api, rx) = (c.clone(), api.clone(), rx.clone());
        clients.push(tokio::spawn(async move {
            while let Ok(body) = rx.recv().await {
                let r = c
                    .post(format!("{api}/v1/events"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("ingest answers");
                assert_eq!(r.status(), 202, "ingest refused a batch");
            }
        }));
    }
    // Progress, RSS and the processing rate while ingest runs.
    let monitor = {
        let (c, api) = (c.clone(), api.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let pending = pending(&c, &api).await;
                eprintln!(
                    "  {:>5.0} s: pending {pending:.0}, daemon RSS {} MiB",
                    t0.elapsed().as_secs_f64(),
                    rss_kib(pid, "VmRSS") / 1024
                );
            }
        })
    };
    for t in clients {
        t.await.unwrap();
    }
    producer.join().unwrap();
    let acked = t0.elapsed();
    let pending_at_acked = pending(&c, &api).await;
    let applied_while_ingesting = n as f64 - pending_at_acked;
    println!(
        "scale: ingest of {n} events for {leads} leads (500/batch, 4 clients): {:.0} events/s acknowledged ({:.0} s); {:.0} applied meanwhile ({:.0} events/s)",
        n as f64 / acked.as_secs_f64(),
        acked.as_secs_f64(),
        applied_while_ingesting,
        applied_while_ingesting / acked.as_secs_f64()
    );

    // Processing on its own, for a while or until drained.
    let t1 = Instant::now();
    let mut left = pending_at_acked;
    while left > 0.0 && t1.elapsed() < Duration::from_secs(process_secs) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        left = pending(&c, &api).await;
    }
    let drain = t1.elapsed();
    let applied_after = pending_at_acked - left;
    monitor.abort();
    println!(
        "scale: processing after ingest: {:.0} events/s ({applied_after:.0} in {:.0} s; {left:.0} still pending)",
        applied_after / drain.as_secs_f64(),
        drain.as_secs_f64()
    );
    let hwm = rss_kib(pid, "VmHWM");
    drop(daemon);

    // The processor's per-step queries on the full tables, daemon stopped.
    let db = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let count = |t: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query(&format!("SELECT count(*) FROM {t}"))
                .fetch_one(&db)
                .await
                .unwrap()
                .get::<i64, _>(0)
        }
    };
    let (n_leads, n_events, n_due) = (
        count("leads").await,
        count("events").await,
        count("due_work").await,
    );
    let pending_q = time_query(
        &db,
        "SELECT seq, payload, received_at FROM events WHERE processed_at IS NULL ORDER BY seq LIMIT 100",
        None,
    )
    .await;
    let due_q = time_query(
        &db,
        "SELECT seq, kind FROM due_work WHERE at <= $1 ORDER BY at, seq LIMIT 100",
        Some(now),
    )
    .await;
    let page_q = time_query(
        &db,
        "SELECT id FROM leads WHERE id > 'lead-500000' ORDER BY id LIMIT 1000",
        None,
    )
    .await;
    let size: i64 = sqlx::query("SELECT pg_database_size('nurture_scale')")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    println!(
        "scale: tables: {n_leads} leads, {n_events} events, {n_due} due-work rows; database {:.1} GiB",
        size as f64 / (1u64 << 30) as f64
    );
    println!(
        "scale: per-step queries (median / p99 of 200): pending events {} ; due work {} ; tick page of 1,000 lead ids {}",
        pending_q, due_q, page_q
    );
    println!("scale: daemon peak RSS {} MiB", hwm / 1024);
    println!(
        "scale summary: {n} events / {leads} leads on PostgreSQL: ingest {:.0} events/s, processing {:.0} events/s, due-work query {}, peak RSS {} MiB",
        n as f64 / acked.as_secs_f64(),
        applied_after / drain.as_secs_f64(),
        due_q.median(),
        hwm / 1024
    );
}

/// Kills the daemon when dropped, so a panic does not leave it running.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Timing(Vec<Duration>);

impl Timing {
    fn median(&self) -> String {
        ms(self.0[self.0.len() / 2])
    }
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p99 = self.0[(self.0.len() * 99 / 100).min(self.0.len() - 1)];
        write!(f, "{} / {}", self.median(), ms(p99))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn time_query(db: &sqlx::PgPool, sql: &str, arg: Option<i64>) -> Timing {
    let mut t = Vec::new();
    for _ in 0..200 {
        let q = sqlx::query(sql);
        let q = match arg {
            Some(a) => q.bind(a),
            None => q,
        };
        let s = Instant::now();
        q.fetch_all(db).await.unwrap();
        t.push(s.elapsed());
    }
    t.sort();
    Timing(t)
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn pending(c: &reqwest::Client, api: &str) -> f64 {
    loop {
        if let Ok(r) = c.get(format!("{api}/healthz")).send().await {
            if let Ok(h) = r.json::<Value>().await {
                if let Some(p) = h["events_pending"].as_f64() {
                    return p;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_ready(c: &reqwest::Client, api: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = c.get(format!("{api}/healthz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the daemon did not become ready");
}

/// A bounded channel from the generator thread to the async clients.
fn async_channel(cap: usize) -> (Sender, Receiver) {
    let (tx, rx) = tokio::sync::mpsc::channel(cap);
    (
        Sender(tx),
        Receiver(std::sync::Arc::new(tokio::sync::Mutex::new(rx))),
    )
}

struct Sender(tokio::sync::mpsc::Sender<Vec<u8>>);

impl Sender {
    fn send_blocking(&self, v: Vec<u8>) -> Result<(), ()> {
        self.0.blocking_send(v).map_err(|_| ())
    }
}

#[derive(Clone)]
struct Receiver(std::sync::Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Vec<u8>>>>);

impl Receiver {
    async fn recv(&self) -> Result<Vec<u8>, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}
