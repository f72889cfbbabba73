//! End-to-end tests of `nurture serve`: the real binary on a free port, real
//! SQLite files and, when `NURTURE_TEST_DATABASE_URL` (or `DATABASE_URL`)
//! names a PostgreSQL server, real PostgreSQL databases made for each test.

use crate::support::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn test_rules() -> PathBuf {
    repo().join("tests/fixtures/daemon-rules")
}

/// The fields `simulate` prints, from a `GET /v1/leads/{id}` answer.
fn simulate_fields(v: &Value) -> Value {
    let keys = [
        "lead",
        "stage",
        "score",
        "fit",
        "owner",
        "consent",
        "ledger",
        "transitions",
        "emails",
        "assignments",
    ];
    Value::Object(
        keys.iter()
            .map(|k| (k.to_string(), v[*k].clone()))
            .collect(),
    )
}

#[test]
fn ingest_gives_the_same_state_as_simulate() {
    let dir = tempfile::tempdir().unwrap();
    let rules = repo().join("rules");
    let events_file = rules.join("events.jsonl");
    let events: Vec<Value> = std::fs::read_to_string(&events_file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for db in backends("same_as_simulate", dir.path()) {
        let d = Daemon::start_args(&db, &rules, None, &["--routing-window", "0s"]);
        let c = client();
        // One request: the events span weeks of the past, and a live daemon
        // runs due work up to now between requests, as it should; in one
        // batch they replay exactly as `simulate` orders them.
        let (s, r) = post(&c, &d.url("/v1/events"), &json!({ "batch": events }));
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        // rules/events.jsonl repeats e12 once.
        assert_eq!(r, json!({"accepted": events.len() - 1, "duplicates": 1}));
        eventually(30, "the daemon to match simulate", || {
            if pending(&c, &d) > 0.0 {
                return None;
            }
            // Due work (the nightly decay, SLA timers) runs up to now in both.
            let expected = simulate_until_now(&rules, &events_file);
            let got: Vec<Value> = expected
                .iter()
                .map(|e| {
                    lead(&c, &d, e["lead"].as_str().unwrap())
                        .map(|v| simulate_fields(&v))
                        .unwrap_or(Value::Null)
                })
                .collect();
            (got == expected).then_some(())
        });
        d.stop();
    }
}

/// A nightly `schedule` tick over more leads than one step takes (1,000)
/// runs in parts, a step each, and ends exactly where `simulate` does.
#[test]
fn a_tick_over_more_leads_than_one_step_takes_matches_simulate() {
    let dir = tempfile::tempdir().unwrap();
    let rules = repo().join("rules");
    // ~1,800 leads over about a day, 40 days ago: from the 31st night on,
    // the nightly decay (rules/scoring.yaml) takes points from every one.
    let (events_file, events) = generated(dir.path(), 2000, 5000, 5, 40);
    for db in backends("tick_in_parts", dir.path()) {
        let d = Daemon::start_args(&db, &rules, None, &["--routing-window", "0s"]);
        let c = client();
        // One batch, so the daemon sees them in the order `simulate` does.
        let (s, r) = post(&c, &d.url("/v1/events"), &json!({ "batch": events }));
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        eventually(180, "the daemon to match simulate", || {
            if pending(&c, &d) > 0.0 {
                return None;
            }
            let expected = simulate_until_now(&rules, &events_file);
            assert!(expected.len() > 1_500, "{} leads", expected.len());
            // Stop at the first difference: the tick may still be going on.
            let same = expected.iter().all(|e| {
                lead(&c, &d, e["lead"].as_str().unwrap()).map(|v| simulate_fields(&v))
                    == Some(e.clone())
            });
            same.then_some(())
        });
        d.stop();
    }
}

/// Applied in 16 partitions, by three daemons on PostgreSQL (one on
/// SQLite), a `nurture gen` workload with nightly ticks, SQLs, feedback and
/// recycling ends exactly as `simulate` says, owners too: with
/// `--routing-window 0s` routing decisions wait for other partitions'
/// earlier work (docs/daemon.md, Partitions).
#[test]
fn partitions_and_three_daemons_decide_as_simulate_does() {
    let dir = tempfile::tempdir().unwrap();
    let rules = repo().join("rules");
    let (events_file, events) = generated(dir.path(), 1500, 5000, 11, 20);
    for db in backends("partitions_as_simulate", dir.path()) {
        let n = if db.starts_with("postgres") { 3 } else { 1 };
        let daemons: Vec<Daemon> = (0..n)
            .map(|_| {
                Daemon::start_args(
                    &db,
                    &rules,
                    None,
                    &["--workers", "2", "--routing-window", "0s"],
                )
            })
            .collect();
        let c = client();
        // One batch, so the daemons see them in the order `simulate` does.
        let (s, r) = post(
            &c,
            &daemons[0].url("/v1/events"),
            &json!({ "batch": events }),
        );
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        let deadline = std::time::Instant::now() + Duration::from_secs(240);
        loop {
            let mut differs = None;
            if pending(&c, &daemons[0]) == 0.0 {
                let expected = simulate_until_now(&rules, &events_file);
                assert!(expected.len() > 1_000, "{} leads", expected.len());
                differs = expected.iter().enumerate().find_map(|(i, e)| {
                    let d = &daemons[i % daemons.len()];
                    let got = lead(&c, d, e["lead"].as_str().unwrap()).map(|v| simulate_fields(&v));
                    (got.as_ref() != Some(e)).then(|| (e.clone(), got))
                });
                if differs.is_none() {
                    break;
                }
            }
            // The last tick may still be going on: look again, for a while.
            assert!(
                std::time::Instant::now() < deadline,
                "{db}: differs from simulate: {differs:#?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        for d in daemons {
            d.stop();
        }
    }
}

#[test]
fn duplicates_are_acknowledged_and_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends("duplicates", dir.path()) {
        let d = Daemon::start(&db, &test_rules(), None);
        let c = client();
        let ev = json!({"id": "dup-1", "lead": "u1", "type": "page_viewed", "at": now_rfc3339(0)});
        let (s, r) = post(&c, &d.url("/v1/events"), &ev);
        assert_eq!(
            (s, r),
            (
                StatusCode::ACCEPTED,
                json!({"accepted": 1, "duplicates": 0})
            )
        );
        let (s, r) = post(&c, &d.url("/v1/events"), &ev);
        assert_eq!(
            (s, r),
            (
                StatusCode::ACCEPTED,
                json!({"accepted": 0, "duplicates": 1})
            )
        );
        let (_, r) = post(
            &c,
            &d.url("/v1/events"),
            &json!({"batch": [ev, ev, {"id": "dup-2", "lead": "u1", "type": "x"}]}),
        );
        assert_eq!(r, json!({"accepted": 1, "duplicates": 2}));
        let l = eventually(10, "two events applied", || {
            lead(&c, &d, "u1").filter(|l| l["ledger"].as_array().unwrap().len() == 2)
        });
        assert_eq!(l["score"], json!(2));
        d.stop();
    }
}

#[test]
fn bad_input_is_refused_whole_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&sqlite_url(dir.path()), &test_rules(), None);
    let c = client();
    let good = json!({"id": "g1", "lead": "u1", "type": "x", "at": now_rfc3339(0)});
    let bad = json!({"id": "b1", "lead": "u1", "type": "x", "at": "yesterday"});
    let (s, r) = post(&c, &d.url("/v1/events"), &json!({"batch": [good, bad]}));
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(r["error"]["field"], json!("batch[1].at"));
    assert_eq!(r["error"]["index"], json!(1));
    // Nothing of that request was stored: the good event is still new.
    let (s, r) = post(&c, &d.url("/v1/events"), &good);
    assert_eq!((s, r["accepted"].clone()), (StatusCode::ACCEPTED, json!(1)));

    let (s, r) = post(&c, &d.url("/v1/events"), &json!({"id": "x", "type": "x"}));
    assert_eq!(
        (s, r["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("lead"))
    );
    let r = c
        .post(d.url("/v1/events"))
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.json::<Value>().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("line 1 column 2"));
    let (s, r) = post(
        &c,
        &d.url("/v1/track"),
        &json!({"userId": "u1", "messageId": "m1"}),
    );
    assert_eq!(
        (s, r["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("event"))
    );
    let (s, r) = post(
        &c,
        &d.url("/v1/leads/u1/feedback"),
        &json!({"status": "maybe"}),
    );
    assert_eq!(
        (s, r["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("status"))
    );
    // Bodies over 1 MiB are refused. The server may answer (and close)
    // before the client has written the whole body: the client then sees
    // its write fail instead of the 413; either way nothing is taken.
    let big = "x".repeat(1 << 20);
    match c
        .post(d.url("/v1/events"))
        .json(&json!({"id": "big", "lead": "u1", "type": "x", "properties": {"b": big}}))
        .send()
    {
        Ok(r) => assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE),
        Err(e) => assert!(format!("{e:?}").contains("BodyWrite"), "{e:?}"),
    }
    let (_, t) = get(&c, &d.url("/v1/leads/u1/timeline?limit=1000"));
    assert!(
        !t.to_string().contains("\"big\""),
        "the refused event is not stored: {t}"
    );
    assert_eq!(get(&c, &d.url("/v1/leads/nobody")).0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&c, &d.url("/v1/leads?stage=vip")).0,
        StatusCode::BAD_REQUEST
    );
    d.stop();
}

#[test]
fn the_api_token_guards_v1_and_segment_takes_it_as_write_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&sqlite_url(dir.path()), &test_rules(), Some("s3cret"));
    let c = client();
    let ev = json!({"id": "a1", "lead": "u1", "type": "x"});
    assert_eq!(
        c.post(d.url("/v1/events"))
            .json(&ev)
            .send()
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.post(d.url("/v1/events"))
            .bearer_auth("wrong")
            .json(&ev)
            .send()
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.post(d.url("/v1/events"))
            .bearer_auth("s3cret")
            .json(&ev)
            .send()
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        c.get(d.url("/v1/leads")).send().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // Segment: the write key as the Basic-auth user.
    let seg = json!({"userId": "u2", "messageId": "m-1", "traits": {"email": "u2@example.com"}, "timestamp": "2026-03-01T10:00:00.000Z"});
    let r = c
        .post(d.url("/v1/identify"))
        .basic_auth("s3cret", Some(""))
        .json(&seg)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let batch = json!({"batch": [
        {"type": "track", "userId": "u2", "messageId": "m-2", "event": "form_submitted", "properties": {"form": "demo"}},
        {"type": "page", "userId": "u2", "messageId": "m-3", "name": "Pricing", "properties": {"path": "/pricing"}}
    ]});
    let r = c
        .post(d.url("/v1/batch"))
        .basic_auth("s3cret", None::<&str>)
        .json(&batch)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Health and metrics stay open for probes.
    assert_eq!(
        c.get(d.url("/healthz")).send().unwrap().status(),
        StatusCode::OK
    );
    let l = eventually(10, "segment events applied", || {
        let r = c
            .get(d.url("/v1/leads/u2"))
            .bearer_auth("s3cret")
            .send()
            .unwrap();
        let v: Value = r.json().ok()?;
        (v["ledger"].as_array()?.len() == 3).then_some(v)
    });
    assert_eq!(l["email"], json!("u2@example.com"));
    let events: Vec<&str> = l["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, vec!["m-1", "m-2", "m-3"]);
    let r = c
        .get(d.url("/v1/leads/u2/timeline"))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    let t: Value = r.json().unwrap();
    let types: Vec<&str> = t["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "event")
        .map(|e| e["detail"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["identify", "form_submitted", "page_viewed"]);
    d.stop();
}

#[test]
fn refuses_to_listen_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--database-url",
            &sqlite_url(dir.path()),
        ])
        .arg("--rules")
        .arg(test_rules())
        .env_remove("NURTURE_API_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only listens on loopback"));
}

#[test]
fn restart_keeps_state_and_due_work() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends("restart", dir.path()) {
        let d = Daemon::start(&db, &test_rules(), None);
        let c = client();
        let ev = json!({"id": "r1", "lead": "u1", "type": "identify", "at": now_rfc3339(0), "traits": {"email": "u1@example.com"}});
        assert_eq!(post(&c, &d.url("/v1/events"), &ev).0, StatusCode::ACCEPTED);
        // The first step goes at once; the second is due 3 s later.
        let l = eventually(10, "the first email", || {
            lead(&c, &d, "u1").filter(|l| l["emails"].as_array().unwrap().len() == 1)
        });
        assert_eq!(l["emails"][0]["template"], json!("hello"));
        d.stop();

        // Down while the second step falls due; it runs after the restart.
        std::thread::sleep(Duration::from_secs(4));
        let d = Daemon::start(&db, &test_rules(), None);
        let l = eventually(10, "the second email after restart", || {
            lead(&c, &d, "u1").filter(|l| l["emails"].as_array().unwrap().len() == 2)
        });
        assert_eq!(l["emails"][1]["template"], json!("later"));
        assert_eq!(
            l["score"],
            json!(1),
            "state survived: one event, applied once"
        );
        // Nothing left to run: no third email can follow.
        settled(&c, &d, 20, true);
        assert_eq!(
            lead(&c, &d, "u1").unwrap()["emails"]
                .as_array()
                .unwrap()
                .len(),
            2,
            "no step sent twice"
        );
        d.stop();
    }
}

#[test]
fn erase_removes_personal_data_and_keeps_counts() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let d = Daemon::start(&db, &test_rules(), None);
    let c = client();
    let ev = json!({"id": "p1", "lead": "u1", "type": "identify", "at": now_rfc3339(0), "traits": {"email": "ann@example.com", "name": "Ann"}});
    post(&c, &d.url("/v1/events"), &ev);
    eventually(10, "the lead", || lead(&c, &d, "u1"));
    assert_eq!(
        c.delete(d.url("/v1/leads/u1")).send().unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.delete(d.url("/v1/leads/nobody")).send().unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let l = lead(&c, &d, "u1").unwrap();
    assert_eq!(l["email"], json!(""));
    assert_eq!(l["attributes"], json!({}));
    assert_eq!(l["score"], json!(1), "anonymous counts stay");
    let (_, f) = get(&c, &d.url("/v1/reports/funnel"));
    assert_eq!(f["leads"], json!(1));
    d.stop();
    // Nothing of Ann is left in the stored events either.
    let raw = std::fs::read(dir.path().join("nurture.db")).unwrap();
    let wal = std::fs::read(dir.path().join("nurture.db-wal")).unwrap_or_default();
    for bytes in [raw, wal] {
        assert!(
            !bytes.windows(15).any(|w| w == b"ann@example.com"),
            "the email is still stored"
        );
    }
}

#[test]
fn lists_and_funnel() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&sqlite_url(dir.path()), &test_rules(), None);
    let c = client();
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.push(json!({"id": format!("i{i}"), "lead": format!("l{i}"), "type": "identify", "traits": {"email": format!("l{i}@x.io")}}));
    }
    for n in 0..3 {
        batch.push(json!({"id": format!("v{n}"), "lead": "l0", "type": "page_viewed"}));
    }
    post(&c, &d.url("/v1/events"), &json!({"batch": batch}));
    eventually(10, "all applied", || {
        (pending(&c, &d) == 0.0 && lead(&c, &d, "l0")?["stage"] == "mql").then_some(())
    });
    let (_, page1) = get(&c, &d.url("/v1/leads?stage=lead&limit=2"));
    let ids: Vec<&str> = page1["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lead"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["l1", "l2"]);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = get(
        &c,
        &d.url(&format!("/v1/leads?stage=lead&limit=2&cursor={cursor}")),
    );
    let ids: Vec<&str> = page2["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lead"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["l3", "l4"]);
    assert_eq!(page2["next_cursor"], Value::Null);
    let (_, f) = get(&c, &d.url("/v1/reports/funnel"));
    let by: BTreeMap<String, Value> = f["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap().to_string(), s.clone()))
        .collect();
    assert_eq!(by["lead"]["count"], json!(4));
    assert_eq!(by["mql"]["count"], json!(1));
    assert_eq!(by["lead"]["reached"], json!(5));
    assert_eq!(by["lead"]["conversion_to_next"], json!(0.2));
    d.stop();
}

/// kill -9 while a client sends: every event that got a 202 is applied
/// exactly once after a restart.
#[test]
fn crash_loses_no_acknowledged_event_and_applies_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends("crash", dir.path()) {
        let d = Daemon::start(&db, &test_rules(), None);
        let url = d.url("/v1/events");
        // How many events were acknowledged so far: the kill comes once the
        // load is under way, however slow the machine.
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = count.clone();
        let sender = std::thread::spawn(move || {
            let c = Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut acked: Vec<String> = Vec::new();
            for b in 0..100_000 {
                let batch: Vec<Value> = (0..20)
                    .map(|i| json!({"id": format!("c{b}-{i}"), "lead": format!("lead{}", i % 7), "type": "page_viewed"}))
                    .collect();
                match c.post(&url).json(&json!({"batch": batch})).send() {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => {
                        acked.extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string()));
                        counted.store(acked.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => break, // the daemon is gone
                }
            }
            acked
        });
        eventually(60, "the client under way", || {
            (count.load(std::sync::atomic::Ordering::Relaxed) > 2_000).then_some(())
        });
        d.kill9();
        let acked = sender.join().unwrap();
        assert!(
            acked.len() > 100,
            "the client got going ({} acked)",
            acked.len()
        );

        let d = Daemon::start(&db, &test_rules(), None);
        let c = client();
        eventually(60, "the backlog applied", || {
            (pending(&c, &d) == 0.0).then_some(())
        });
        let mut applied: Vec<String> = Vec::new();
        for i in 0..7 {
            let l = lead(&c, &d, &format!("lead{i}")).unwrap();
            let ledger = l["ledger"].as_array().unwrap();
            assert_eq!(l["score"].as_u64().unwrap() as usize, ledger.len());
            applied.extend(
                ledger
                    .iter()
                    .map(|e| e["event"].as_str().unwrap().to_string()),
            );
        }
        let unique: HashSet<&String> = applied.iter().collect();
        assert_eq!(unique.len(), applied.len(), "an event was applied twice");
        let missing: Vec<&String> = acked.iter().filter(|id| !unique.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged events lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(3)]
        );
        d.stop();
    }
}

/// A test that needs PostgreSQL passes on a laptop without it, but fails in
/// CI: this binary run again for one such test, with `CI=true` and no
/// database configured, must fail and say why.
#[test]
fn a_postgres_test_fails_in_ci_without_postgres() {
    let test = "two_processes_on_postgres_do_each_item_once";
    let run = |ci: &str| {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &format!("daemon::{test}"),
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CI", ci)
            .env_remove("NURTURE_TEST_DATABASE_URL")
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run("true");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "passed in CI without PostgreSQL:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "{test}: cannot run, and CI=true: PostgreSQL not configured"
        )),
        "{text}"
    );
    // Elsewhere it is skipped, saying so.
    let out = run("");
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{test}: skipped: PostgreSQL not configured")),
        "{text}"
    );
}

/// Two daemons on one PostgreSQL database share the work: each due item is
/// done once.
#[test]
fn two_processes_on_postgres_do_each_item_once() {
    let Some(db) = postgres_url("two_processes") else {
        return skip("two_processes_on_postgres_do_each_item_once", NO_POSTGRES);
    };
    let a = Daemon::start(&db, &test_rules(), None);
    let b = Daemon::start(&db, &test_rules(), None);
    let c = client();
    let n = 60;
    for i in 0..n {
        let d = if i % 2 == 0 { &a } else { &b };
        let ev = json!({"id": format!("t{i}"), "lead": format!("u{i:03}"), "type": "identify", "at": now_rfc3339(0), "traits": {"email": format!("u{i}@x.io")}});
        assert_eq!(post(&c, &d.url("/v1/events"), &ev).0, StatusCode::ACCEPTED);
    }
    // Both steps of every drip: the first at once, the second 3 s later,
    // picked up by whichever process gets there first.
    eventually(30, "every lead's two emails", || {
        let (_, page) = get(&c, &a.url("/v1/leads?limit=1000"));
        let leads = page["leads"].as_array()?;
        (leads.len() == n).then_some(())?;
        (0..n)
            .all(|i| {
                lead(&c, &b, &format!("u{i:03}"))
                    .is_some_and(|l| l["emails"].as_array().unwrap().len() == 2)
            })
            .then_some(())
    });
    // One database: when it has nothing left to do, no email can follow.
    settled(&c, &a, 20, true);
    for i in 0..n {
        let l = lead(&c, &a, &format!("u{i:03}")).unwrap();
        let templates: Vec<&str> = l["emails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["template"].as_str().unwrap())
            .collect();
        assert_eq!(templates, vec!["hello", "later"], "lead u{i:03}");
        let (_, t) = get(&c, &a.url(&format!("/v1/leads/u{i:03}/timeline")));
        let sends = t["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "email")
            .count();
        assert_eq!(sends, 2, "lead u{i:03}: each step queued once");
    }
    a.stop();
    b.stop();
}

#[test]
fn broken_rules_are_rejected_on_reload_and_the_old_ones_keep_running() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("r.yaml"),
        "scoring:\n  - { name: a, on: '*', points: 1 }\n",
    )
    .unwrap();
    let d = Daemon::start(&sqlite_url(dir.path()), &rules, None);
    let c = client();
    post(
        &c,
        &d.url("/v1/events"),
        &json!({"id": "1", "lead": "u", "type": "x"}),
    );
    eventually(10, "first event", || {
        lead(&c, &d, "u").filter(|l| l["score"] == 1)
    });
    std::fs::write(
        rules.join("r.yaml"),
        "scoring:\n  - { name: a, on: '*', pionts: 5 }\n",
    )
    .unwrap();
    eventually(10, "the rejection", || {
        let t = c.get(d.url("/metrics")).send().ok()?.text().ok()?;
        (metric(&t, "nurture_rules_rejected_total") >= 1.0).then_some(())
    });
    post(
        &c,
        &d.url("/v1/events"),
        &json!({"id": "2", "lead": "u", "type": "x"}),
    );
    eventually(10, "second event, old rules", || {
        lead(&c, &d, "u").filter(|l| l["score"] == 2)
    });
    std::fs::write(
        rules.join("r.yaml"),
        "scoring:\n  - { name: a, on: '*', points: 10 }\n",
    )
    .unwrap();
    eventually(10, "the reload", || {
        let t = c.get(d.url("/metrics")).send().ok()?.text().ok()?;
        (metric(&t, "nurture_rules_reloaded_total") >= 1.0).then_some(())
    });
    post(
        &c,
        &d.url("/v1/events"),
        &json!({"id": "3", "lead": "u", "type": "x"}),
    );
    eventually(10, "third event, new rules", || {
        lead(&c, &d, "u").filter(|l| l["score"] == 12)
    });
    d.stop();
}

/// Issue 14: a NUL in an event's `lead`, `id` or `type` was answered 503 on
/// PostgreSQL (and stored by SQLite); it is bad input, a 400 that names it.
#[test]
fn nul_in_an_identifier_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends("nul_identifier", dir.path()) {
        let d = Daemon::start(&db, &test_rules(), None);
        let c = client();
        for field in ["lead", "id", "type"] {
            let mut ev = json!({"id": "n1", "lead": "u1", "type": "x"});
            ev[field] = json!("a\u{0}b");
            let (s, r) = post(&c, &d.url("/v1/events"), &ev);
            assert_eq!(
                (s, r["error"]["field"].clone()),
                (StatusCode::BAD_REQUEST, json!(field)),
                "{db}: {r}"
            );
            let good = json!({"id": "n0", "lead": "u1", "type": "x"});
            let (s, r) = post(&c, &d.url("/v1/events"), &json!({"batch": [good, ev]}));
            assert_eq!(
                (s, r["error"]["field"].clone()),
                (StatusCode::BAD_REQUEST, json!(format!("batch[1].{field}"))),
                "{db}: {r}"
            );
        }
        let seg = json!({"userId": "u\u{0}", "messageId": "m1", "event": "x"});
        let (s, r) = post(&c, &d.url("/v1/track"), &seg);
        assert_eq!(
            (s, r["error"]["field"].clone()),
            (StatusCode::BAD_REQUEST, json!("userId")),
            "{db}: {r}"
        );
        let seg = json!({"userId": "u1", "messageId": "m1", "event": "x\u{0}"});
        let (s, r) = post(&c, &d.url("/v1/track"), &seg);
        assert_eq!(
            (s, r["error"]["field"].clone()),
            (StatusCode::BAD_REQUEST, json!("event")),
            "{db}: {r}"
        );
        for path in ["/v1/leads/u%00", "/v1/leads/u%00/timeline"] {
            assert_eq!(
                get(&c, &d.url(path)).0,
                StatusCode::NOT_FOUND,
                "{db}: {path}"
            );
        }
        // Nothing of it was stored: the good event of the batches is new.
        let (s, r) = post(
            &c,
            &d.url("/v1/events"),
            &json!({"id": "n0", "lead": "u1", "type": "x"}),
        );
        assert_eq!((s, r["accepted"].clone()), (StatusCode::ACCEPTED, json!(1)));
        assert_eq!(get(&c, &d.url("/healthz")).1["status"], json!("ok"));
        d.stop();
    }
}

/// Issue 14: concurrent requests share a group-commit transaction, and one
/// client's bad events failed other clients' valid ones (64 of 120 with
/// 503). Here one client sends events with a NUL (refused when read) and
/// events the database itself refuses (a constraint added for the test,
/// past every check of the daemon's), while six clients send valid events:
/// every valid request is acknowledged and every valid event applied.
#[test]
fn a_clients_bad_events_fail_only_its_own_requests() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends("bad_client", dir.path()) {
        let out = Command::new(BIN)
            .args(["migrate", "--database-url", &db])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        if db.starts_with("sqlite:") {
            db_exec(
                &db,
                "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.lead = 'refused' \
                 BEGIN SELECT RAISE(ABORT, 'lead refused by the test'); END",
            );
        } else {
            db_exec(
                &db,
                "ALTER TABLE events ADD CONSTRAINT refuse CHECK (lead <> 'refused')",
            );
        }
        let d = Daemon::start(&db, &test_rules(), None);
        let url = d.url("/v1/events");
        let bad = {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = client();
                let mut statuses = Vec::new();
                for i in 0..40 {
                    let ev = if i % 2 == 0 {
                        json!({"id": format!("bad{i}"), "lead": "u\u{0}", "type": "x"})
                    } else {
                        json!({"id": format!("bad{i}"), "lead": "refused", "type": "x"})
                    };
                    let (s, r) = post(&c, &url, &json!({"batch": [ev]}));
                    statuses.push((s, r));
                }
                statuses
            })
        };
        let good: Vec<_> = (0..6)
            .map(|client_no| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let c = client();
                    let mut failed = Vec::new();
                    for r in 0..20 {
                        let batch: Vec<Value> = (0..3)
                            .map(|i| json!({"id": format!("g{client_no}-{r}-{i}"), "lead": format!("good{client_no}"), "type": "x"}))
                            .collect();
                        let (s, body) = post(&c, &url, &json!({ "batch": batch }));
                        if s != StatusCode::ACCEPTED {
                            failed.push((s, body));
                        }
                    }
                    failed
                })
            })
            .collect();
        let failed: Vec<_> = good.into_iter().flat_map(|t| t.join().unwrap()).collect();
        assert!(
            failed.is_empty(),
            "{db}: {} of 120 valid requests failed, e.g. {:?}",
            failed.len(),
            failed.first()
        );
        for (i, (s, r)) in bad.join().unwrap().into_iter().enumerate() {
            assert_eq!(s, StatusCode::BAD_REQUEST, "{db}: bad request {i}: {r}");
            if i % 2 == 0 {
                assert_eq!(r["error"]["field"], json!("batch[0].lead"), "{r}");
            } else {
                let msg = r["error"]["message"].as_str().unwrap_or_default();
                assert!(msg.starts_with("events refused by the database"), "{r}");
            }
        }
        let c = client();
        eventually(30, "every valid event applied", || {
            (0..6)
                .all(|n| lead(&c, &d, &format!("good{n}")).is_some_and(|l| l["score"] == 60))
                .then_some(())
        });
        assert!(lead(&c, &d, "refused").is_none());
        assert_eq!(get(&c, &d.url("/healthz")).1["status"], json!("ok"));
        d.stop();
    }
}

/// Issue 14: `1.00000000000000011102230246251565404236316680908203125` (a tie,
/// correctly rounded to 1.0) was read as the next double up, and some
/// 124-digit integers changed by one ulp each time their stored form was
/// read back. An acknowledged event is applied as sent: the rules see the
/// correctly rounded double, and the lead and the stored event keep it,
/// before and after a restart.
#[test]
fn numbers_are_applied_and_kept_as_sent() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir(
        dir.path(),
        "scoring:\n  - { name: exact, on: measured, if: 'event.properties.tie == 1.0', points: 1 }\n  - { name: rounded-up, on: measured, if: 'event.properties.tie > 1.0', points: 100 }\n",
    );
    let tie = "1.00000000000000011102230246251565404236316680908203125";
    // Read right once, but not from their stored (shortest) form.
    let big = "4685850177548659716638049837986427983580696659917340626421905468427472780481961517028216494383354118578802484593686274953493";
    // Read one ulp off at once.
    let big2 = "6508899579032892184011070434192541224824475771046563414839603062027868387380695604230411442694208093972980635139693716487059";
    // What the stored JSON must say: the correctly rounded double, written
    // in its shortest form (the writer does not depend on how text is read).
    let text = |t: &str| serde_json::to_string(&t.parse::<f64>().unwrap()).unwrap();
    let expected = [
        format!(r#""tie":{}"#, text(tie)),
        format!(r#""big":{}"#, text(big)),
        format!(r#""big2":{}"#, text(big2)),
    ];
    assert_eq!(expected[0], r#""tie":1.0"#);
    // Sent as text: the test's own JSON reader must not round them first.
    let body = format!(
        r#"{{"id":"n1","lead":"u1","type":"measured","properties":{{"tie":{tie},"big":{big},"big2":{big2}}},"traits":{{"tie":{tie},"big":{big},"big2":{big2}}}}}"#
    );
    for db in backends("exact_numbers", dir.path()) {
        let c = client();
        let check = |d: &Daemon, when: &str| {
            let lead = c.get(d.url("/v1/leads/u1")).send().unwrap().text().unwrap();
            for e in &expected {
                assert!(lead.contains(e), "{db} {when}: lead lacks {e}: {lead}");
            }
            let v: Value = serde_json::from_str(&lead).unwrap();
            assert_eq!(
                v["score"],
                json!(1),
                "{db} {when}: the rules saw 1.0: {lead}"
            );
            let payload = with_db(&db, async |pool| {
                use sqlx::Row;
                let row = sqlx::query("SELECT payload FROM events WHERE id = 'n1'")
                    .fetch_one(pool)
                    .await
                    .unwrap();
                row.get::<String, _>(0)
            });
            for e in &expected {
                assert!(
                    payload.contains(e),
                    "{db} {when}: the stored event lacks {e}: {payload}"
                );
            }
        };
        let d = Daemon::start(&db, &rules, None);
        let r = c
            .post(d.url("/v1/events"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        eventually(10, "the event applied", || {
            (pending(&c, &d) == 0.0 && lead(&c, &d, "u1").is_some()).then_some(())
        });
        check(&d, "before a restart");
        d.stop();
        let d = Daemon::start(&db, &rules, None);
        check(&d, "after a restart");
        d.stop();
    }
}

/// Issue 14: the Segment write key was the API token, which also reads
/// every lead, erases and claims. Write keys send events and nothing else;
/// the API token still works from servers, never from a browser.
#[test]
fn write_keys_send_events_only_and_the_api_token_stays_off_browsers() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_opts(
        &sqlite_url(dir.path()),
        &test_rules(),
        Some("admin-token"),
        &["--cors-origin", "https://shop.example"],
        // From the environment (the flag, `--write-key`, would replace it).
        &[("NURTURE_WRITE_KEYS", "wk-env-0,wk-env-1, wk-env-2")],
    );
    let c = client();
    let ev = |id: &str| json!({"id": id, "lead": "u1", "type": "x"});
    // Each write key sends events, as Bearer or as Segment's Basic-auth user.
    for (i, key) in ["wk-env-0", "wk-env-1", "wk-env-2"].into_iter().enumerate() {
        let r = c
            .post(d.url("/v1/events"))
            .bearer_auth(key)
            .json(&ev(&format!("w{i}")))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{key}");
        let r = c
            .post(d.url("/v1/track"))
            .basic_auth(key, Some(""))
            .json(&json!({"userId": "u1", "messageId": format!("t{i}"), "event": "x"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{key}");
    }
    // ... and nothing else.
    let admin_calls = [
        ("GET", "/v1/leads"),
        ("GET", "/v1/leads/u1"),
        ("GET", "/v1/leads/u1/timeline"),
        ("DELETE", "/v1/leads/u1"),
        ("POST", "/v1/leads/u1/claim"),
        ("POST", "/v1/leads/u1/feedback"),
        ("GET", "/v1/pool?owner=anna"),
        ("GET", "/v1/reports/funnel"),
    ];
    for (method, path) in admin_calls {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = c
            .request(m.clone(), d.url(path))
            .bearer_auth("wk-env-0")
            .json(&json!({"owner": "anna", "status": "won"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let body: Value = r.json().unwrap();
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("write key") && msg.contains("API token"),
            "{msg}"
        );
        let r = c
            .request(m, d.url(path))
            .basic_auth("wk-env-1", Some(""))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path} (Basic)");
    }
    let r = c
        .get(d.url("/v1/leads"))
        .bearer_auth("admin-token")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The API token still sends events from a server (no Origin header).
    let r = c
        .post(d.url("/v1/identify"))
        .basic_auth("admin-token", Some(""))
        .json(&json!({"userId": "u1", "messageId": "i1"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Never from a browser, not even from an allowed origin.
    for (path, body) in [
        ("/v1/events", ev("o1")),
        (
            "/v1/track",
            json!({"userId": "u1", "messageId": "o2", "event": "x"}),
        ),
        (
            "/v1/t",
            json!({"userId": "u1", "messageId": "o3", "event": "x", "writeKey": "admin-token"}),
        ),
    ] {
        let mut req = c
            .post(d.url(path))
            .header("origin", "https://shop.example")
            .header("content-type", "text/plain")
            .body(body.to_string());
        if body.get("writeKey").is_none() {
            req = req.basic_auth("admin-token", Some(""));
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        let body: Value = r.json().unwrap();
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("not accepted from a browser"), "{msg}");
    }
    // Wrong or missing keys.
    let r = c
        .post(d.url("/v1/events"))
        .bearer_auth("wk-nope")
        .json(&ev("n1"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c.post(d.url("/v1/events")).json(&ev("n2")).send().unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(d.url("/v1/leads"))
        .bearer_auth("wk-nope")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // What the write keys sent was applied.
    let l = eventually(10, "the events applied", || {
        let r = c
            .get(d.url("/v1/leads/u1"))
            .bearer_auth("admin-token")
            .send()
            .ok()?;
        let v: Value = r.json().ok()?;
        (v["score"] == 7).then_some(v)
    });
    assert_eq!(l["ledger"].as_array().unwrap().len(), 7);
    d.stop();
}

/// Issue 14: there was no CORS (`OPTIONS /v1/track` → 405), so analytics.js
/// could not send from a browser. It posts `text/plain` bodies carrying
/// `writeKey` to `{host}/v1/t`, `/i`, `/p` and `/b`; a client that sets
/// headers asks first (preflight).
#[test]
fn a_browser_on_an_allowed_origin_sends_events_with_a_write_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_opts(
        &sqlite_url(dir.path()),
        &test_rules(),
        Some("admin-token"),
        &[
            "--write-key",
            "wk-site",
            "--cors-origin",
            "https://shop.example,http://localhost:3000",
        ],
        &[],
    );
    let c = client();
    let acao = |r: &reqwest::blocking::Response| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    for path in ["/v1/track", "/v1/t", "/v1/events", "/v1/batch"] {
        let r = c
            .request(reqwest::Method::OPTIONS, d.url(path))
            .header("origin", "https://shop.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        assert_eq!(acao(&r).as_deref(), Some("https://shop.example"), "{path}");
        let h = |n: &str| {
            r.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_lowercase())
        };
        assert!(h("access-control-allow-methods").unwrap().contains("post"));
        assert!(h("access-control-allow-headers")
            .unwrap()
            .contains("authorization"));
    }
    // What analytics.js sends (abridged): a track, a page and a batch.
    let track = json!({
        "type": "track", "event": "signed_up", "properties": {"plan": "pro"},
        "anonymousId": "anon-1", "messageId": "ajs-1", "timestamp": now_rfc3339(0),
        "context": {"page": {"path": "/"}, "library": {"name": "analytics.js"}},
        "integrations": {}, "writeKey": "wk-site", "sentAt": now_rfc3339(0),
        "_metadata": {"bundled": ["Segment.io"]}
    });
    let page = json!({"type": "page", "name": "Pricing", "properties": {"path": "/pricing"},
        "anonymousId": "anon-1", "messageId": "ajs-2", "writeKey": "wk-site"});
    let batch = json!({"writeKey": "wk-site", "sentAt": now_rfc3339(0), "batch": [
        {"type": "identify", "anonymousId": "anon-1", "messageId": "ajs-3", "traits": {"plan": "pro"}},
        {"type": "track", "anonymousId": "anon-1", "messageId": "ajs-4", "event": "clicked"}
    ]});
    for (path, body) in [("/v1/t", &track), ("/v1/p", &page), ("/v1/b", &batch)] {
        let r = c
            .post(d.url(path))
            .header("origin", "https://shop.example")
            .header("content-type", "text/plain")
            .body(body.to_string())
            .send()
            .unwrap();
        assert_eq!(acao(&r).as_deref(), Some("https://shop.example"), "{path}");
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{path}: {:?}", r.text());
    }
    // Another origin is refused, and its browser gets no CORS grant.
    let r = c
        .post(d.url("/v1/t"))
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body(json!({"type": "track", "event": "x", "anonymousId": "a", "messageId": "e1", "writeKey": "wk-site"}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(acao(&r), None);
    // A wrong key from an allowed origin: 401, readable by the page.
    let r = c
        .post(d.url("/v1/t"))
        .header("origin", "http://localhost:3000")
        .body(json!({"type": "track", "event": "x", "anonymousId": "a", "messageId": "e2", "writeKey": "wk-old"}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(acao(&r).as_deref(), Some("http://localhost:3000"));
    // The admin routes grant no origin anything.
    let r = c
        .request(reqwest::Method::OPTIONS, d.url("/v1/leads"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "GET")
        .send()
        .unwrap();
    assert_eq!(acao(&r), None);
    let l = eventually(10, "the browser's events applied", || {
        let r = c
            .get(d.url("/v1/leads/anon-1"))
            .bearer_auth("admin-token")
            .send()
            .ok()?;
        let v: Value = r.json().ok()?;
        (v["score"] == 4).then_some(v)
    });
    assert_eq!(l["attributes"]["plan"], json!("pro"));
    d.stop();
}

/// Write keys from a file: several, named, and revoked by editing the file,
/// without a restart. A bad line stops the start with file:line.
#[test]
fn a_write_key_removed_from_its_file_is_revoked_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("write-keys");
    // Written whole, then renamed, as the docs ask.
    let write = |text: &str| {
        let tmp = dir.path().join("write-keys.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &keys).unwrap();
    };
    write("wk-a marketing site\nbad:key\n");
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &sqlite_url(dir.path()),
        ])
        .arg("--rules")
        .arg(test_rules())
        .arg("--write-keys-file")
        .arg(&keys)
        .env_remove("NURTURE_API_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2: ", keys.display())),
        "{stderr}"
    );

    write("# keys for the web sites\nwk-a marketing site\n\nwk-b   docs site\n");
    let d = Daemon::start_args(
        &sqlite_url(dir.path()),
        &test_rules(),
        None,
        &["--write-keys-file", keys.to_str().unwrap()],
    );
    let c = client();
    let send = |key: Option<&str>, id: &str| {
        let mut r = c
            .post(d.url("/v1/events"))
            .json(&json!({"id": id, "lead": "u1", "type": "x"}));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send().unwrap().status()
    };
    assert_eq!(send(Some("wk-a"), "1"), StatusCode::ACCEPTED);
    assert_eq!(send(Some("wk-b"), "2"), StatusCode::ACCEPTED);
    assert_eq!(send(Some("wk-c"), "3"), StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(None, "4"),
        StatusCode::UNAUTHORIZED,
        "a keys file guards ingest"
    );
    // Without an API token the admin API stays open on loopback, but a write
    // key is still no key to it.
    assert_eq!(get(&c, &d.url("/v1/leads")).0, StatusCode::OK);
    let r = c
        .get(d.url("/v1/leads"))
        .bearer_auth("wk-a")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    write("wk-b docs site\nwk-c new site\n");
    eventually(10, "wk-a revoked", || {
        (send(Some("wk-a"), "5") == StatusCode::UNAUTHORIZED).then_some(())
    });
    assert_eq!(send(Some("wk-c"), "6"), StatusCode::ACCEPTED);
    assert_eq!(send(Some("wk-b"), "7"), StatusCode::ACCEPTED);
    // Removing the file revokes all its keys.
    std::fs::remove_file(&keys).unwrap();
    eventually(10, "every key revoked", || {
        (send(Some("wk-b"), "8") == StatusCode::UNAUTHORIZED).then_some(())
    });
    d.stop();
}

/// Reads from `s` until the server closes it, or fails after `secs`.
fn closed_by_server(s: &mut std::net::TcpStream, secs: u64) -> bool {
    use std::io::Read as _;
    let start = std::time::Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(secs) {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn slow_header_and_idle_connections_are_closed_by_the_server() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_args(
        &sqlite_url(dir.path()),
        &test_rules(),
        None,
        &["--header-timeout", "1s"],
    );
    let addr = d.base.trim_start_matches("http://").to_string();
    // Headers begun, never finished.
    let mut slow: Vec<_> = (0..20)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    for s in &mut slow {
        assert!(closed_by_server(s, 60), "a slow-header socket stayed open");
    }
    // A keep-alive connection, idle after its response.
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(
        closed_by_server(&mut idle, 60),
        "an idle keep-alive socket stayed open"
    );
    // The daemon still serves.
    assert_eq!(get(&client(), &d.url("/healthz")).0, StatusCode::OK);
    d.stop();
}

#[test]
fn sigterm_closes_a_half_sent_request_after_the_shutdown_timeout() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_args(
        &sqlite_url(dir.path()),
        &test_rules(),
        None,
        &["--shutdown-timeout", "1s", "--header-timeout", "10m"],
    );
    let addr = d.base.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    // The daemon has accepted it: a full request on another connection is served.
    assert_eq!(get(&client(), &d.url("/healthz")).0, StatusCode::OK);
    let pid = d.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = eventually(60, "serve exits after SIGTERM", || {
        d.child.try_wait().unwrap()
    });
    assert!(status.success(), "serve exited with {status}");
    assert!(closed_by_server(&mut s, 10));
}

#[test]
fn every_error_is_json_also_413_404_and_405() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&sqlite_url(dir.path()), &test_rules(), None);
    let c = client();
    // 10 MB declared: refused before the body is sent (the client would
    // otherwise see the connection closed while it still writes).
    let addr = d.base.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n",
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{answer}"
    );
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let v: Value = serde_json::from_str(body).expect("a JSON body");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("1048576"),
        "{v}"
    );
    // Over the limit without a declared length (chunked): JSON as well, when
    // the client reads the answer before the server closes on its writes.
    let big = "x".repeat(2 << 20);
    let r = c
        .post(d.url("/v1/events"))
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(big)))
        .send();
    if let Ok(r) = r {
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let v: Value = r.json().expect("a JSON body");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let (s, v) = get(&c, &d.url("/nowhere"));
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"]["message"].is_string(), "{v}");
    let r = c.get(d.url("/v1/events")).send().unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers().contains_key("allow"));
    let v: Value = r.json().expect("a JSON body");
    assert!(v["error"]["message"].is_string(), "{v}");
    d.stop();
}

#[test]
fn failed_authentications_get_429_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_args(
        &sqlite_url(dir.path()),
        &test_rules(),
        Some("s3cret"),
        &["--auth-failures-per-minute", "5"],
    );
    let c = client();
    for _ in 0..5 {
        let r = c
            .get(d.url("/v1/leads"))
            .bearer_auth("guess")
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    for token in ["guess", "s3cret"] {
        let r = c.get(d.url("/v1/leads")).bearer_auth(token).send().unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["field"], json!("Authorization"));
    }
    // Ingest routes share the limit; probes are not limited.
    let r = c
        .post(d.url("/v1/events"))
        .bearer_auth("guess")
        .json(&json!({"id": "a", "lead": "u", "type": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get(&c, &d.url("/healthz")).0, StatusCode::OK);
    d.stop();
}

/// Posts one event with `key` until the daemon answers 429 (at most 50
/// times: a limit of 1 a second is spent long before), and returns that
/// answer's Retry-After and body.
fn until_429(c: &Client, d: &Daemon, key: &str) -> (u64, Value) {
    for i in 0..50 {
        let r = c
            .post(d.url("/v1/events"))
            .bearer_auth(key)
            .json(&json!({"id": format!("{key}-{i}"), "lead": "u", "type": "x"}))
            .send()
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let wait = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            return (wait, r.json().expect("a JSON error body"));
        }
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    panic!("50 requests with {key} and no 429");
}

#[test]
fn ingest_past_its_rate_gets_429_per_write_key_and_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let keys = &["--write-key", "key-one,key-two"];
    let d = Daemon::start_args(
        &sqlite_url(dir.path()),
        &test_rules(),
        Some("s3cret"),
        &[keys[0], keys[1], "--ingest-per-key", "1"],
    );
    let c = client();
    let (wait, v) = until_429(&c, &d, "key-one");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("--ingest-per-key"), "{message}");
    // Another key from the same address has its own rate; the admin
    // routes and the API token on ingest are not limited per key.
    let r = c
        .post(d.url("/v1/events"))
        .bearer_auth("key-two")
        .json(&json!({"id": "two", "lead": "u", "type": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for i in 0..5 {
        let r = c
            .post(d.url("/v1/events"))
            .bearer_auth("s3cret")
            .json(&json!({"id": format!("admin-{i}"), "lead": "u", "type": "x"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    d.stop();

    // Per address: whatever the key, the second key shares the address's rate.
    let d = Daemon::start_args(
        &sqlite_url(dir.path()),
        &test_rules(),
        Some("s3cret"),
        &[keys[0], keys[1], "--ingest-per-address", "1"],
    );
    let (wait, v) = until_429(&c, &d, "key-one");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--ingest-per-address"),
        "{v}"
    );
    // The Segment routes too, with the other key (a token refilled in
    // between on a slow machine only delays the 429).
    let limited = (0..50).any(|i| {
        let r = c
            .post(d.url("/v1/track"))
            .basic_auth("key-two", Some(""))
            .json(&json!({"userId": "u", "event": "x", "messageId": format!("m{i}")}))
            .send()
            .unwrap();
        r.status() == StatusCode::TOO_MANY_REQUESTS
    });
    assert!(limited, "the Segment routes share the address's rate");
    assert_eq!(
        get(&c, &d.url("/healthz")).0,
        StatusCode::OK,
        "probes are not limited"
    );
    d.stop();
}

/// What a run of the binary printed, stdout and stderr together.
fn printed(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("NURTURE_API_TOKEN")
        .env_remove("NURTURE_SMTP_URL")
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn database_passwords_are_never_printed() {
    let rules = test_rules();
    let bad = "mysql://nurture:hunter2@db.example/x";
    for args in [
        vec!["migrate", "--database-url", bad],
        vec!["doctor", "--database-url", bad],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rules",
            rules.to_str().unwrap(),
            "--database-url",
            bad,
        ],
    ] {
        let out = printed(&args);
        assert!(!out.contains("hunter2"), "{args:?}: {out}");
        assert!(
            out.contains("mysql://nurture:***@db.example/x"),
            "{args:?}: {out}"
        );
    }
    let Some(pg) = postgres_url("redaction") else {
        return skip(
            "database_passwords_are_never_printed on PostgreSQL",
            NO_POSTGRES,
        );
    };
    // The test server trusts any password: give it one to hide.
    let (scheme, rest) = pg.split_once("://").unwrap();
    let with_password = match rest.split_once('@') {
        Some((user, host)) => format!(
            "{scheme}://{}:hunter2@{host}",
            user.split(':').next().unwrap()
        ),
        None => format!("{scheme}://postgres:hunter2@{rest}"),
    };
    for cmd in ["migrate", "doctor"] {
        let out = printed(&[cmd, "--database-url", &with_password]);
        assert!(!out.contains("hunter2"), "{cmd}: {out}");
        assert!(out.contains(":***@"), "{cmd}: {out}");
    }
}

#[test]
fn an_empty_api_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let rules = test_rules();
    let serve = |env: Option<&str>, flag: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db])
            .arg("--rules")
            .arg(&rules)
            .env_remove("NURTURE_API_TOKEN");
        if let Some(v) = env {
            cmd.env("NURTURE_API_TOKEN", v);
        }
        if let Some(f) = flag {
            cmd.args(["--api-token", f]);
        }
        // Refused before it listens: it exits on its own.
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = serve(Some(""), None);
    assert!(!ok);
    assert!(err.contains("NURTURE_API_TOKEN is set but empty"), "{err}");
    let (ok, err) = serve(None, Some(" "));
    assert!(!ok);
    assert!(err.contains("--api-token is empty"), "{err}");
}

#[test]
fn log_json_takes_1_and_the_start_line_names_version_database_email_and_auth() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let db = sqlite_url(dir.path());
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db])
        .arg("--rules")
        .arg(test_rules())
        .args([
            "--smtp-url",
            "smtp://mailer:hunter2@127.0.0.1:1?tls=required",
        ])
        .env_remove("NURTURE_API_TOKEN")
        .env_remove("NURTURE_SMTP_URL")
        .env("NURTURE_API_TOKEN", "s3cret")
        .env("NURTURE_LOG_JSON", "1")
        .env("NURTURE_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("nurture listening on "), "{line}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let start = lines
        .iter()
        .find(|l| l["fields"]["message"] == "listening")
        .unwrap_or_else(|| panic!("no start line in {text}"));
    let f = &start["fields"];
    assert_eq!(f["version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(f["database"], json!(db));
    // The schema's version: the newest migration shipped.
    let newest = std::fs::read_dir(repo().join("migrations/sqlite"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.split('_').next()?.parse::<i64>().ok()
        })
        .max()
        .unwrap();
    assert_eq!(f["schema"], json!(newest), "{f}");
    assert_eq!(
        f["email"],
        json!("smtp 127.0.0.1:1 (starttls required, with login)")
    );
    assert!(
        f["auth"].as_str().unwrap().starts_with("API token set"),
        "{f}"
    );
}

#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_args(
        &sqlite_url(dir.path()),
        &test_rules(),
        None,
        &["--max-connections", "2", "--header-timeout", "10m"],
    );
    let addr = d.base.trim_start_matches("http://").to_string();
    let mut held: Vec<_> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    let quick = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // Both slots are taken: this one is not served (it waits in the backlog).
    assert!(quick.get(d.url("/healthz")).send().is_err());
    held.pop();
    eventually(60, "served once a slot is free", || {
        quick
            .get(d.url("/healthz"))
            .send()
            .ok()
            .filter(|r| r.status() == StatusCode::OK)
    });
    drop(held);
    d.stop();
}

#[test]
fn a_full_fd_table_is_reported_as_such() {
    use std::io::{BufRead as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let db = sqlite_url(dir.path());
    // A hard limit the daemon cannot raise.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\"", BIN])
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db])
        .arg("--rules")
        .arg(test_rules())
        .arg("--outbox")
        .arg(dir.path().join("outbox"))
        .args(["--header-timeout", "10m"])
        .env_remove("NURTURE_API_TOKEN")
        .env_remove("NURTURE_SMTP_URL")
        .env("NURTURE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("nurture listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    let mut held: Vec<_> = (0..100)
        .filter_map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\n").ok()?;
            Some(s)
        })
        .collect();
    let said = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(what)
    };
    eventually(60, "the accept loop names the full fd table", || {
        said("cannot accept connections: the file-descriptor table is full").then_some(())
    });
    // A forced reload (SIGHUP) on each look, so one meets the full table
    // even when another task frees a descriptor for a moment.
    eventually(60, "the reload loop names the full fd table", || {
        let _ = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status();
        (said("cannot read the rules directory: the file-descriptor table is full")
            || said("cannot read this directory: Too many open files"))
        .then_some(())
    });
    assert!(!said("no *.yaml rules files here"));
    held.clear();
    let c = client();
    eventually(60, "served again once descriptors are free", || {
        c.get(format!("http://{addr}/healthz"))
            .send()
            .ok()
            .filter(|r| r.status() == StatusCode::OK)
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "serve exited with {status}: {text}");
}

/// A lead's stored state holds what the evaluator needs to decide, not its
/// history: a lead with 10,000 events has a state row no larger than one
/// with 10, and its whole history still reads back (from the history
/// tables). The rules are chosen so that both leads' figures have the same
/// number of digits (a score and ledger count of 10 and of 70), so "no
/// larger" is exact.
#[test]
fn a_lead_with_10000_events_has_a_state_no_larger_than_one_with_10() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir(
        dir.path(),
        r#"
scoring:
  - { name: visit, on: page_viewed, points: 1, limit: { times: 2, per: 1d } }
stages:
  lead: 'lead.email != ""'
"#,
    );
    let start = chrono::Utc::now() - chrono::Duration::days(40);
    let at = |minutes: i64| {
        (start + chrono::Duration::minutes(minutes))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    for db in backends("bounded_state", dir.path()) {
        let d = Daemon::start(&db, &rules, None);
        let c = client();
        let mut events = Vec::new();
        // lead-a: 10 views, a day apart (10 points).
        for i in 0..10 {
            events.push(json!({"id": format!("a{i}"), "lead": "lead-a", "type": "page_viewed", "at": at(i * 1440)}));
        }
        // lead-b: 10,000 views, five minutes apart over 35 days (2 a day: 70).
        for i in 0..10_000 {
            events.push(json!({"id": format!("b{i}"), "lead": "lead-b", "type": "page_viewed", "at": at(i * 5)}));
        }
        for chunk in events.chunks(500) {
            let (s, r) = post(&c, &d.url("/v1/events"), &json!({ "batch": chunk }));
            assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        }
        settled(&c, &d, 120, false);
        let b = lead(&c, &d, "lead-b").unwrap();
        assert_eq!(b["score"], json!(70));
        assert_eq!(
            b["ledger"].as_array().map(Vec::len),
            Some(70),
            "the whole ledger reads back"
        );
        assert_eq!(lead(&c, &d, "lead-a").unwrap()["score"], json!(10));
        d.stop();
        let sizes: BTreeMap<String, i64> = with_db(&db, async |pool| {
            use sqlx::Row;
            sqlx::query("SELECT id, state FROM leads")
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1).len() as i64))
                .collect()
        });
        assert!(
            sizes["lead-b"] <= sizes["lead-a"],
            "{db}: the state of a lead with 10,000 events is {} bytes, of one with 10 {} bytes",
            sizes["lead-b"],
            sizes["lead-a"]
        );
    }
}

/// A database made by version 1 (tests/fixtures/v1, whose README says how),
/// where every lead's state held its whole history, is upgraded by
/// `nurture migrate`: the history moves into its tables and out of the
/// states, and the daemon on it then decides as `simulate` does over the
/// same events, events that arrive after the upgrade included (one meets a
/// limit that only the old history had filled).
#[test]
fn a_version_1_database_migrates_forward_and_decides_as_before() {
    let fx = repo().join("tests/fixtures/v1");
    let rules = fx.join("rules");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fx.join("sqlite.db"), dir.path().join("nurture.db")).unwrap();
    let mut dbs = vec![sqlite_url(dir.path())];
    match postgres_url("v1_upgrade") {
        Some(pg) => {
            let dump = std::fs::read_to_string(fx.join("postgres.sql")).unwrap();
            with_db(&pg, async |pool| {
                sqlx::raw_sql(&dump).execute(pool).await.unwrap();
            });
            dbs.push(pg);
        }
        None => skip(
            "a_version_1_database_migrates_forward on PostgreSQL",
            NO_POSTGRES,
        ),
    }
    // After the upgrade: w11 views again within a day of the two views
    // that filled its limit (no points), w01 a week later (points).
    let later = [
        json!({"id": "after1", "lead": "w11", "type": "page_viewed", "at": "2026-11-12T20:00:00Z"}),
        json!({"id": "after2", "lead": "w01", "type": "page_viewed", "at": "2026-11-20T10:00:00Z"}),
    ];
    let all = dir.path().join("all.jsonl");
    let mut text = std::fs::read_to_string(fx.join("events.jsonl")).unwrap();
    for e in &later {
        text.push_str(&format!("{e}\n"));
    }
    std::fs::write(&all, &text).unwrap();
    let expected = simulate_until_now(&rules, &all);
    assert_eq!(expected.len(), 12);

    for db in dbs {
        let count = |sql: &'static str| -> i64 {
            with_db(&db, async |pool| {
                use sqlx::Row;
                sqlx::query(sql)
                    .fetch_one(pool)
                    .await
                    .unwrap()
                    .get::<i64, _>(0)
            })
        };
        let old_states = "SELECT COUNT(*) FROM leads WHERE state LIKE '%\"ledger\":[%'";
        assert_eq!(
            count(old_states),
            12,
            "{db}: the fixture is a version 1 database"
        );
        let out = Command::new(BIN)
            .args(["migrate", "--database-url", &db])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(count(old_states), 0, "{db}: every state upgraded");
        let emails: usize = expected
            .iter()
            .map(|l| l["emails"].as_array().unwrap().len())
            .sum();
        assert_eq!(count("SELECT COUNT(*) FROM emails") as usize, emails);
        assert_eq!(count("SELECT COUNT(*) FROM assignments"), 6);
        assert_eq!(count("SELECT COUNT(*) FROM feedback"), 6);
        // Migrating again finds nothing to do and changes nothing.
        let out = Command::new(BIN)
            .args(["migrate", "--database-url", &db])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(count("SELECT COUNT(*) FROM emails") as usize, emails);

        let d = Daemon::start(&db, &rules, None);
        let c = client();
        let (s, r) = post(&c, &d.url("/v1/events"), &json!({ "batch": later }));
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        settled(&c, &d, 30, false);
        for e in &expected {
            let id = e["lead"].as_str().unwrap();
            let got = lead(&c, &d, id).map(|v| simulate_fields(&v));
            assert_eq!(got.as_ref(), Some(e), "{db}: lead {id}");
        }
        // The timeline is composed from the tables, once: version 1's copies
        // of events and points are gone, and paging through it a few
        // entries at a time gives the whole of it.
        let whole = timeline_of(&c, &d, "w02", None, 1000);
        let kinds = |k: &str| whole.iter().filter(|e| e["kind"] == k).count();
        let events = text
            .lines()
            .filter(|l| l.contains(r#""lead": "w02""#))
            .count();
        assert_eq!(kinds("event"), events, "{db}: {whole:?}");
        assert_eq!(
            kinds("scored"),
            expected[2]["ledger"].as_array().unwrap().len()
        );
        assert_eq!(
            kinds("stage_changed"),
            expected[2]["transitions"].as_array().unwrap().len()
        );
        assert_eq!(kinds("assigned"), 1);
        assert_eq!(whole[0]["kind"], "event");
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = timeline_of(&c, &d, "w02", after.as_deref(), 3);
            let Some(last) = page.last() else { break };
            after = Some(last["cursor"].as_str().unwrap().to_string());
            paged.extend(page);
        }
        assert_eq!(paged, whole);
        d.stop();
    }
}

/// A lead's timeline entries after `after`, at most `limit`.
fn timeline_of(c: &Client, d: &Daemon, id: &str, after: Option<&str>, limit: usize) -> Vec<Value> {
    let mut url = format!("/v1/leads/{id}/timeline?limit={limit}");
    if let Some(a) = after {
        url.push_str(&format!("&after={a}"));
    }
    let (s, v) = get(c, &d.url(&url));
    assert_eq!(s, StatusCode::OK, "{v}");
    v["entries"].as_array().unwrap().clone()
}
