//! Reliability under crashes: the daemon is killed with SIGKILL again and
//! again while clients send events and it sends email; nothing acknowledged
//! may be lost or applied twice, and no email may be lost or sent twice
//! (beyond the documented repeat of a message whose outcome a crash left
//! unknown, which carries the same Message-ID and is marked on the timeline).

mod support;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::smtp::SmtpServer;
use support::*;

const CYCLES: usize = 10;

#[test]
fn kill_loop_loses_no_acknowledged_event_and_no_email() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends("reliability_kill_loop", dir.path()) {
        kill_loop(&db);
    }
}

fn kill_loop(db: &str) {
    let rules = repo().join("tests/fixtures/email-rules");
    let smtp = SmtpServer::start();
    let url = smtp.url();
    let args = ["--smtp-url", url.as_str(), "--secret", "kill-loop"];
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut next = 0usize;
    for cycle in 0..CYCLES {
        let d = Daemon::start_args(db, &rules, None, &args);
        let stop = Arc::new(AtomicBool::new(false));
        // Two clients send batches of 20 new opted-in leads until the kill.
        let clients: Vec<_> = (0..2)
            .map(|w| {
                let (acked, stop, base) = (acked.clone(), stop.clone(), d.base.clone());
                let first = next + w * 100_000;
                std::thread::spawn(move || {
                    let c = client();
                    let mut i = first;
                    while !stop.load(Ordering::Relaxed) {
                        let ids: Vec<String> = (i..i + 20).map(|k| format!("c{cycle}-{k}")).collect();
                        i += 20;
                        let batch: Vec<Value> = ids
                            .iter()
                            .map(|id| json!({"id": id, "lead": id, "type": "identify",
                                    "traits": {"email": format!("{id}@leads.example"), "consent": "opted_in"}}))
                            .collect();
                        match c.post(format!("{base}/v1/events")).json(&json!({"batch": batch})).send() {
                            Ok(r) if r.status() == StatusCode::ACCEPTED => {
                                acked.lock().unwrap().extend(ids);
                                // A steady load, not a flood: the point is the kills.
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            _ => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
            })
            .collect();
        // Kill at a different moment each cycle, while sends are under way.
        std::thread::sleep(Duration::from_millis(300 + 70 * cycle as u64));
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        next += 1_000_000;
    }

    // Recovery: one more start, and everything acknowledged is applied and sent.
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the load ran ({} events acknowledged)",
        acked.len()
    );
    let d = Daemon::start_args(db, &rules, None, &args);
    let c = client();
    eventually(120, "every acknowledged event applied", || {
        (pending(&c, &d) == 0.0).then_some(())
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let by_lead = loop {
        let mut by_lead: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let got = smtp.messages();
        for m in &got {
            by_lead
                .entry(m.to[0].trim_end_matches("@leads.example").to_string())
                .or_default()
                .insert(m.header("Message-ID").unwrap());
        }
        // (Leads whose batch was stored but whose 202 the kill cut off get
        // their email too; only the acknowledged ones are owed one.)
        let all = acked.iter().all(|id| by_lead.contains_key(id.as_str()));
        if all || Instant::now() > deadline {
            break by_lead;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Read the outcome straight from the database: events applied per lead,
    // and the sends the timeline marks as repeats after a crash.
    let (applied, uncertain): (BTreeMap<String, i64>, BTreeSet<String>) =
        with_db(db, async |pool| {
            use sqlx::Row;
            let rows = sqlx::query(
                "SELECT lead, COUNT(*) FROM timeline WHERE kind = 'event' GROUP BY lead",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            let applied = rows
                .iter()
                .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
                .collect();
            let rows = sqlx::query("SELECT detail FROM timeline WHERE kind = 'email_sent'")
                .fetch_all(pool)
                .await
                .unwrap();
            let uncertain = rows
                .iter()
                .filter_map(|r| serde_json::from_str::<Value>(&r.get::<String, _>(0)).ok())
                .filter(|d| d["uncertain"] == json!(true))
                .filter_map(|d| d["message_id"].as_str().map(str::to_string))
                .collect();
            (applied, uncertain)
        });
    // No acknowledged event lost, none applied twice; no email lost.
    for id in &acked {
        assert_eq!(
            applied.get(id),
            Some(&1),
            "{id}: applied {:?} times",
            applied.get(id)
        );
        assert_eq!(
            by_lead.get(id.as_str()).map(BTreeSet::len),
            Some(1),
            "{id}: one welcome email, one Message-ID"
        );
    }
    // A message that arrived twice was resent because a crash left its first
    // send's outcome unknown, and the timeline says so.
    let got = smtp.messages();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for m in &got {
        *count.entry(m.header("Message-ID").unwrap()).or_default() += 1;
    }
    let repeated: Vec<&String> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    for mid in &repeated {
        assert!(
            uncertain.contains(*mid),
            "{mid} arrived twice without a crash to explain it"
        );
    }
    eprintln!(
        "{db}: {CYCLES} kills, {} events acknowledged and applied once, {} emails delivered, {} repeated after a crash",
        acked.len(),
        got.len(),
        repeated.len()
    );
    d.stop();
}
