//! Sending throughput: `cargo bench --bench email [COUNT]`.
//!
//! COUNT messages (default 20,000) are queued in the outbox of a SQLite
//! database, as the processor queues them, and the daemon's sender delivers
//! them over its SMTP connection pool into a local sink: postfix's
//! `smtp-sink` when it is installed (Debian package `postfix`), else the SMTP
//! server the tests use. With postfix installed, its `smtp-source` then sends
//! as many messages of the same size over as many connections into the same
//! sink, for comparison. Prints one summary line per figure.

use nurture::daemon::metrics::Metrics;
use nurture::email::compose::{Outgoing, Unsubscribe};
use nurture::email::sender::Sender;
use nurture::email::Transport;
use nurture::model::{Consent, LeadState};
use nurture::store::{StepTx, Store, Writes};
use nurture::writes::{OutboxKind, Queued};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../../../tests/support/smtp.rs"]
#[allow(dead_code)]
mod smtp;

fn main() {
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = free_port();
    let postfix = find("smtp-sink").zip(find("smtp-source"));
    // Keep whichever sink runs alive for the whole benchmark.
    let _sink: Box<dyn std::any::Any> = if let Some((sink, _)) = &postfix {
        let mut cmd = Command::new(sink);
        // smtp-sink refuses to run as root without a user to become.
        if std::env::var("USER").as_deref() == Ok("root") || is_root() {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .args([&format!("127.0.0.1:{port}"), "1024"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp-sink");
        wait_for_port(port);
        Box::new(Killed(child))
    } else {
        Box::new(smtp::SmtpServer::start_on(port))
    };
    let sink = if postfix.is_some() {
        "postfix smtp-sink"
    } else {
        "the test SMTP server"
    };

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let (secs, size) = rt.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let size = enqueue(&store, count).await;
        let sender = Sender {
            store: store.clone(),
            transport: Arc::new(
                Transport::new(Some(&format!("smtp://127.0.0.1:{port}")), dir.path()).unwrap(),
            ),
            metrics: Arc::new(Metrics::default()),
            clock: nurture::clock::Clock::system(),
        };
        // The transport alone: the same messages, 16 at a time, no database.
        let transport = sender.transport.clone();
        let sample: Vec<Outgoing> = (0..count.min(5_000)).map(message).collect();
        let t = Instant::now();
        let gate = Arc::new(tokio::sync::Semaphore::new(nurture::email::transport::CONCURRENCY));
        let mut set = tokio::task::JoinSet::new();
        for m in sample.clone() {
            let (transport, gate) = (transport.clone(), gate.clone());
            set.spawn(async move {
                let _p = gate.acquire_owned().await;
                transport.send(&m).await.unwrap();
            });
        }
        while set.join_next().await.is_some() {}
        let alone = sample.len() as f64 / t.elapsed().as_secs_f64();
        println!("email: the SMTP transport alone (lettre pool, 16 at a time, no database): {alone:.0} emails/s");

        let t = Instant::now();
        let sent = sender.drain().await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(sent, count);
        let failed =
            sender.metrics.total("emails_failed") + sender.metrics.total("emails_retried");
        assert_eq!(failed, 0.0, "sends failed");
        (secs, size)
    });
    let ours = count as f64 / secs;
    println!(
        "email: {count} messages of {size} bytes sent by nurture over {} pooled SMTP connections to {sink} in {secs:.2} s: {ours:.0} emails/s (each claimed, sent and marked sent in SQLite)",
        nurture::email::transport::CONCURRENCY
    );
    if let Some((_, source)) = &postfix {
        let t = Instant::now();
        let status = Command::new(source)
            .args([
                "-d",
                "-s",
                &nurture::email::transport::CONCURRENCY.to_string(),
                "-m",
                &count.to_string(),
                "-l",
                &size.to_string(),
                "-f",
                "hello@acme.example",
                "-t",
                "lead@leads.example",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .status()
            .expect("run smtp-source");
        assert!(status.success());
        let secs = t.elapsed().as_secs_f64();
        let theirs = count as f64 / secs;
        println!(
            "email: postfix smtp-source, same count, size and connections, same sink: {secs:.2} s, {theirs:.0} emails/s; nurture reaches {:.0} % of it",
            100.0 * ours / theirs
        );
        println!(
            "email summary: nurture {ours:.0} emails/s, postfix smtp-source {theirs:.0} emails/s into the same smtp-sink: {:.0} % (target >= 50 %)",
            100.0 * ours / theirs
        );
    } else {
        println!("email summary: nurture {ours:.0} emails/s into {sink} (install postfix for the comparison with smtp-source)");
    }
}

/// Queues `count` marketing emails as the processor does; returns the size
/// of one message as sent.
async fn enqueue(store: &Store, count: usize) -> usize {
    let mut size = 0;
    for chunk in (0..count).collect::<Vec<_>>().chunks(5_000) {
        let mut w = Writes::default();
        for &i in chunk {
            let m = message(i);
            size = nurture::email::transport::build(&m)
                .unwrap()
                .formatted()
                .len();
            w.outbox.push(Queued {
                lead: format!("lead{i}"),
                kind: OutboxKind::Email,
                payload: serde_json::to_value(&m).unwrap(),
                withheld: false,
            });
            // The sender checks each lead's consent as it sends.
            let mut lead = LeadState::new(&format!("lead{i}"), chrono::Utc::now());
            lead.email = m.to.clone();
            lead.consent = Consent::OptedIn;
            w.leads.push((None, lead));
        }
        let now = chrono::Utc::now();
        let rows = nurture::store::lead_rows(&w, now).unwrap();
        let read = store.engine_state(0).await.unwrap();
        let mut tx = StepTx::begin(store, &read, false).await.unwrap().unwrap();
        tx.write(&w, rows, now).await.unwrap();
        tx.commit().await.unwrap();
    }
    size
}

/// A drip email as the composer makes it, about 1 KB.
fn message(i: usize) -> Outgoing {
    let text = "Hi Ann,\n\nthanks for your interest in Acme. Here is where to start: https://acme.example.com/start\n\n".repeat(4);
    Outgoing {
        message_id: format!("<{i:032x}@acme.example>"),
        from: "Acme <hello@acme.example>".into(),
        to: format!("lead{i}@leads.example"),
        subject: "Welcome, Ann".into(),
        text: format!("{text}Unsubscribe: https://n.example/unsubscribe/T{i}\n"),
        html: None,
        unsubscribe: Some(Unsubscribe {
            url: format!("https://n.example/unsubscribe/T{i}"),
            mailto: format!("mailto:hello@acme.example?subject=unsubscribe%20T{i}"),
        }),
        what: "drip/1".into(),
    }
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// A program on PATH or in /usr/sbin (where Debian puts postfix's tools).
fn find(cmd: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "smtp-sink did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}
