//! End-to-end tests of routing and the closed loop in `nurture serve`:
//! assignment under concurrency, claims, SLA breaches on the real clock,
//! feedback and recycling, the per-owner report, and signed webhooks
//! delivered to a real HTTP receiver started here. SQLite always, and
//! PostgreSQL when `NURTURE_TEST_DATABASE_URL` is set.

use crate::support::*;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Rules for these tests: `hot` makes an SQL, an email makes a `lead` who
/// gets a one-step nurture drip. `ROUTING` and `EXTRA` are filled per test.
const RULES: &str = r#"
scoring:
  - { name: hot, on: hot, points: 100 }
stages:
  lead: 'lead.email != ""'
  sql: 'lead.score >= 100'
templates:
  - { name: hello, subject: Hello, text: "Hi {{ unsubscribe_url }}" }
campaigns:
  - name: nurture
    enroll: 'lead.stage == "lead"'
    exit: 'lead.stage == "sql"'
    steps:
      - { after: 0s, template: hello }
routing:
ROUTING
EXTRA
settings:
  email: { from: "Test <t@example.com>", require_consent: false }
"#;

fn rules(dir: &std::path::Path, routing: &str, extra: &str) -> std::path::PathBuf {
    rules_dir(
        dir,
        &RULES.replace("ROUTING", routing).replace("EXTRA", extra),
    )
}

fn hot(id: &str, lead: &str) -> Value {
    json!({"id": id, "lead": lead, "type": "hot", "traits": {"email": format!("{lead}@x.io")}})
}

fn send(c: &Client, d: &Daemon, ev: &Value) {
    let (s, r) = post(c, &d.url("/v1/events"), ev);
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
}

fn owned_by(c: &Client, d: &Daemon, owner: &str) -> Vec<String> {
    let (s, page) = get(c, &d.url(&format!("/v1/leads?owner={owner}&limit=1000")));
    assert_eq!(s, StatusCode::OK, "{page}");
    page["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lead"].as_str().unwrap().to_string())
        .collect()
}

fn timeline(c: &Client, d: &Daemon, lead: &str) -> Vec<Value> {
    let (_, t) = get(c, &d.url(&format!("/v1/leads/{lead}/timeline")));
    t["entries"].as_array().cloned().unwrap_or_default()
}

fn owner_figures(c: &Client, d: &Daemon) -> BTreeMap<String, Value> {
    let (s, f) = get(c, &d.url("/v1/reports/funnel"));
    assert_eq!(s, StatusCode::OK);
    f["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["owner"].as_str().unwrap().to_string(), o.clone()))
        .collect()
}

#[test]
fn capacity_holds_under_concurrent_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules(
        dir.path(),
        r#"  owners:
    - { id: a, email: a@x.io, capacity: 2 }
    - { id: b, email: b@x.io, capacity: 3 }
  rules:
    - { name: r, owners: [a, b], strategy: round_robin }"#,
        "",
    );
    for db in backends("routing_capacity", dir.path()) {
        // On PostgreSQL, two processes share the database and the work.
        // Routing in time order: the place freed by a "won" goes to the SQL
        // that follows it, whatever partitions the two leads are in.
        let args = ["--routing-window", "0s"];
        let daemons: Vec<Daemon> = if db.starts_with("postgres") {
            vec![
                Daemon::start_args(&db, &rules, None, &args),
                Daemon::start_args(&db, &rules, None, &args),
            ]
        } else {
            vec![Daemon::start_args(&db, &rules, None, &args)]
        };
        let n = 24;
        std::thread::scope(|s| {
            for i in 0..n {
                let d = &daemons[i % daemons.len()];
                s.spawn(move || send(&client(), d, &hot(&format!("h{i}"), &format!("l{i:02}"))));
            }
        });
        let c = client();
        let d = &daemons[0];
        eventually(30, "every lead an SQL", || {
            let (_, page) = get(&c, &d.url("/v1/leads?stage=sql&limit=1000"));
            (page["leads"].as_array()?.len() == n).then_some(())
        });
        assert_eq!(owned_by(&c, d, "a").len(), 2, "a's capacity");
        assert_eq!(owned_by(&c, d, "b").len(), 3, "b's capacity");
        let f = owner_figures(&c, d);
        assert_eq!(
            (f["a"]["open"].clone(), f["b"]["open"].clone()),
            (json!(2), json!(3))
        );

        // A won lead frees a place: the next SQL goes to a.
        let first = owned_by(&c, d, "a")[0].clone();
        let (s, r) = post(
            &c,
            &d.url(&format!("/v1/leads/{first}/feedback")),
            &json!({"status": "won"}),
        );
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        send(&c, d, &hot("h-next", "next"));
        let l = eventually(10, "the next lead routed", || {
            lead(&c, d, "next").filter(|l| l["stage"] == "sql")
        });
        assert_eq!(l["owner"], json!("a"));
        assert_eq!(owned_by(&c, d, "a").len(), 3, "two open, one won");
        for d in daemons {
            d.stop();
        }
    }
}

const CLAIM: &str = r#"  owners:
    - { id: o0, email: o0@x.io }
    - { id: o1, email: o1@x.io }
    - { id: o2, email: o2@x.io }
    - { id: o3, email: o3@x.io }
    - { id: o4, email: o4@x.io }
    - { id: o5, email: o5@x.io }
    - { id: o6, email: o6@x.io }
    - { id: o7, email: o7@x.io }
  rules:
    - { name: pool, owners: [o0, o1, o2, o3, o4, o5, o6, o7], strategy: claim }"#;

#[test]
fn claim_races_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules(dir.path(), CLAIM, "");
    for db in backends("routing_claims", dir.path()) {
        let d = Daemon::start(&db, &rules, None);
        let c = client();
        send(&c, &d, &hot("h1", "u1"));
        let pool = eventually(10, "the lead in o3's pool", || {
            let (_, p) = get(&c, &d.url("/v1/pool?owner=o3"));
            (p["leads"].as_array()?.len() == 1).then_some(p)
        });
        let entry = pool["leads"][0].as_object().unwrap();
        let mut keys: Vec<&str> = entry.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            vec!["fit", "lead", "offered_at", "score", "stage"],
            "summary only"
        );
        assert_eq!(pool["leads"][0]["lead"], json!("u1"));

        // Bad claims are refused before anything is stored.
        let claim_url = d.url("/v1/leads/u1/claim");
        let (s, r) = post(&c, &claim_url, &json!({}));
        assert_eq!(
            (s, r["error"]["field"].clone()),
            (StatusCode::BAD_REQUEST, json!("owner"))
        );
        let (s, r) = post(&c, &claim_url, &json!({"owner": "nobody"}));
        assert_eq!(
            (s, r["error"]["field"].clone()),
            (StatusCode::BAD_REQUEST, json!("owner"))
        );
        let (s, _) = post(&c, &d.url("/v1/leads/ghost/claim"), &json!({"owner": "o1"}));
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, r) = get(&c, &d.url("/v1/pool"));
        assert_eq!(
            (s, r["error"]["field"].clone()),
            (StatusCode::BAD_REQUEST, json!("owner"))
        );

        let answers: Vec<(String, StatusCode, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let url = claim_url.clone();
                    s.spawn(move || {
                        let owner = format!("o{i}");
                        let (st, body) = post(&client(), &url, &json!({"owner": owner}));
                        (owner, st, body)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<&(String, StatusCode, Value)> =
            answers.iter().filter(|a| a.1 == StatusCode::OK).collect();
        assert_eq!(winners.len(), 1, "{answers:?}");
        let losers = answers
            .iter()
            .filter(|a| a.1 == StatusCode::CONFLICT)
            .count();
        assert_eq!(losers, 7, "{answers:?}");
        let winner = &winners[0].0;
        assert_eq!(winners[0].2["owner"], json!(winner));
        assert_eq!(lead(&c, &d, "u1").unwrap()["owner"], json!(winner));
        assert_eq!(owned_by(&c, &d, winner), vec!["u1"]);
        // Claimed: in nobody's pool any more.
        let (_, p) = get(&c, &d.url("/v1/pool?owner=o3"));
        assert_eq!(p["leads"], json!([]));
        // The winner asking again is told it is theirs.
        let (s, _) = post(&c, &claim_url, &json!({"owner": winner}));
        assert_eq!(s, StatusCode::OK);
        d.stop();
    }
}

#[test]
fn an_owner_past_the_sla_must_give_feedback_before_claiming() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules(
        dir.path(),
        &format!("{CLAIM}\n  sla: {{ accept_within: 1s, notify: boss@x.io }}"),
        "",
    );
    for db in backends("routing_claim_sla", dir.path()) {
        let d = Daemon::start(&db, &rules, None);
        let c = client();
        send(&c, &d, &hot("h1", "u1"));
        send(&c, &d, &hot("h2", "u2"));
        eventually(10, "both leads in the pool", || {
            let (_, p) = get(&c, &d.url("/v1/pool?owner=o1"));
            (p["leads"].as_array()?.len() == 2).then_some(())
        });
        let (s, r) = post(&c, &d.url("/v1/leads/u1/claim"), &json!({"owner": "o1"}));
        assert_eq!(s, StatusCode::OK, "{r}");
        eventually(10, "u1 overdue", || {
            let (_, p) = get(&c, &d.url("/v1/pool?owner=o1"));
            (p["overdue"] == json!(["u1"])).then_some(())
        });
        let (s, r) = post(&c, &d.url("/v1/leads/u2/claim"), &json!({"owner": "o1"}));
        assert_eq!(s, StatusCode::FORBIDDEN, "{r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains("u1"),
            "{r}"
        );
        // Others may still claim; o1 may again once u1 has an answer.
        let (s, r) = post(
            &c,
            &d.url("/v1/leads/u1/feedback"),
            &json!({"status": "accepted", "owner": "o1"}),
        );
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        eventually(10, "u1 accepted", || {
            lead(&c, &d, "u1").filter(|l| l["stage"] == "opportunity")
        });
        let (s, r) = post(&c, &d.url("/v1/leads/u2/claim"), &json!({"owner": "o1"}));
        assert_eq!(s, StatusCode::OK, "{r}");
        d.stop();
    }
}

#[test]
fn sla_breach_is_recorded_notified_and_reassigned_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules(
        dir.path(),
        r#"  owners:
    - { id: a, email: a@x.io }
    - { id: b, email: b@x.io }
  rules:
    - { name: r, owners: [a, b], strategy: round_robin }
  sla: { accept_within: 2s, notify: boss@x.io, on_breach: reassign }"#,
        "",
    );
    for db in backends("routing_sla", dir.path()) {
        let d = Daemon::start(&db, &rules, None);
        let c = client();
        send(&c, &d, &hot("h1", "u1"));
        // a, breach → b, breach → a: the lead keeps breaching, and each
        // breach is escalated.
        let l = eventually(30, "two reassignments", || {
            lead(&c, &d, "u1").filter(|l| l["assignments"].as_array().unwrap().len() >= 3)
        });
        let owners: Vec<&str> = l["assignments"]
            .as_array()
            .unwrap()
            .iter()
            .take(3)
            .map(|a| a["owner"].as_str().unwrap())
            .collect();
        assert_eq!(owners, vec!["a", "b", "a"]);
        let entries = timeline(&c, &d, "u1");
        let breached: Vec<&Value> = entries
            .iter()
            .filter(|e| e["kind"] == "note" && e["detail"]["note"] == "sla_breached")
            .map(|e| &e["detail"]["owner"])
            .collect();
        assert!(breached.len() >= 2, "{entries:?}");
        assert_eq!((breached[0], breached[1]), (&json!("a"), &json!("b")));
        // Notices are composed emails (docs/email.md).
        let notices: Vec<Value> = outbox(&db, "notification")
            .into_iter()
            .filter(|r| r.payload["what"] == "sla_breach")
            .map(|r| r.payload)
            .collect();
        assert!(notices.len() >= 2, "{notices:?}");
        assert_eq!(notices[0]["to"], json!("boss@x.io"));
        assert!(
            notices[0]["text"]
                .as_str()
                .unwrap()
                .starts_with("a gave no feedback"),
            "{notices:?}"
        );
        let m = c.get(d.url("/metrics")).send().unwrap().text().unwrap();
        assert!(metric(&m, "nurture_sla_breaches_total") >= 2.0, "{m}");
        let f = owner_figures(&c, &d);
        assert!(f["a"]["sla_breaches"].as_i64().unwrap() >= 1);
        assert!(f["b"]["sla_breaches"].as_i64().unwrap() >= 1);
        assert!(f["a"]["assigned"].as_i64().unwrap() >= 2);
        d.stop();
    }
}

#[test]
fn feedback_moves_stages_and_recycled_leads_are_nurtured_again() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules(
        dir.path(),
        r#"  owners:
    - { id: a, email: a@x.io }
  rules:
    - { name: r, owners: [a], strategy: round_robin }
  recycle_score: 5"#,
        "",
    );
    for db in backends("routing_feedback", dir.path()) {
        let d = Daemon::start(&db, &rules, None);
        let c = client();
        for l in ["u1", "u2"] {
            send(
                &c,
                &d,
                &json!({"id": format!("i-{l}"), "lead": l, "type": "identify", "traits": {"email": format!("{l}@x.io")}}),
            );
        }
        eventually(10, "the welcome emails", || {
            lead(&c, &d, "u2").filter(|l| l["emails"].as_array().unwrap().len() == 1)
        });
        send(&c, &d, &json!({"id": "h1", "lead": "u1", "type": "hot"}));
        send(&c, &d, &json!({"id": "h2", "lead": "u2", "type": "hot"}));
        eventually(10, "both with a", || {
            (owned_by(&c, &d, "a").len() == 2).then_some(())
        });

        // accepted → opportunity, then won → customer.
        let fb = |lead: &str, body: Value| {
            let (s, r) = post(&c, &d.url(&format!("/v1/leads/{lead}/feedback")), &body);
            assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        };
        fb("u1", json!({"status": "accepted", "owner": "a"}));
        eventually(10, "u1 an opportunity", || {
            lead(&c, &d, "u1").filter(|l| l["stage"] == "opportunity")
        });
        fb("u1", json!({"status": "won", "owner": "a"}));
        eventually(10, "u1 a customer", || {
            lead(&c, &d, "u1").filter(|l| l["stage"] == "customer")
        });

        // rejected → recycled: back to `lead`, no owner, score reset, and a
        // new nurture cycle sends the welcome again.
        fb(
            "u2",
            json!({"status": "rejected", "reason": "no budget", "owner": "a"}),
        );
        let l = eventually(10, "u2 nurtured again", || {
            lead(&c, &d, "u2").filter(|l| l["emails"].as_array().unwrap().len() == 2)
        });
        assert_eq!(l["stage"], json!("lead"));
        assert_eq!(l["owner"], Value::Null);
        assert_eq!(l["score"], json!(5));
        let last = l["ledger"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            (last["rule"].clone(), last["points"].clone()),
            (json!("recycle"), json!(-95))
        );
        let cycles: Vec<&Value> = l["enrollments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["cycle"])
            .collect();
        assert_eq!(cycles, vec![&json!(0), &json!(1)]);
        assert!(owned_by(&c, &d, "a").contains(&"u1".to_string()));

        let f = owner_figures(&c, &d);
        let a = &f["a"];
        assert_eq!(
            (
                a["assigned"].clone(),
                a["accepted"].clone(),
                a["won"].clone(),
                a["rejected"].clone(),
                a["open"].clone()
            ),
            (json!(2), json!(1), json!(1), json!(1), json!(0)),
            "{a}"
        );
        assert!(a["median_seconds_to_feedback"].is_i64(), "{a}");
        d.stop();
    }
}

// --- Webhooks --------------------------------------------------------------

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    status: u16,
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// A real HTTP server on 127.0.0.1 that records requests and answers 500
/// to the first `fail_first` of them.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(listener: std::net::TcpListener, fail_first: usize) -> Receiver {
        use axum::http::HeaderMap;
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = got.clone();
        // A webhook receiver of the test's own, not an API route.
        #[allow(clippy::disallowed_methods)]
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    let h = |k: &str| {
                        headers
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let mut seen = seen.lock().unwrap();
                    let status = if seen.len() < fail_first { 500 } else { 204 };
                    seen.push(Got {
                        status,
                        id: h("webhook-id"),
                        timestamp: h("webhook-timestamp"),
                        signature: h("webhook-signature"),
                        body,
                    });
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        });
        Receiver { addr, got, _rt: rt }
    }

    fn delivered(&self) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.status < 300)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The Standard Webhooks check, written from the spec rather than taken
/// from the engine: base64(HMAC-SHA256(key, "id.timestamp.body")), the key
/// being the base64 after `whsec_`, compared with each `v1,` signature.
fn signature_ok(g: &Got) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", g.id, g.timestamp, g.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    g.signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

fn webhook_rules(dir: &std::path::Path, addr: SocketAddr) -> std::path::PathBuf {
    rules(
        dir,
        r#"  owners:
    - { id: a, email: a@x.io }
  rules:
    - { name: r, owners: [a], strategy: round_robin }"#,
        &format!(
            r#"webhooks:
  - name: crm
    url: http://{addr}/hook
    on: [lead.stage_changed, lead.assigned, lead.sla_breached, lead.recycled, lead.unsubscribed]
    secret: ${{NURTURE_TEST_WEBHOOK_SECRET}}"#
        ),
    )
}

fn body(g: &Got) -> Value {
    serde_json::from_str(&g.body).unwrap()
}

/// The (lead, type) of each delivery, per lead in the order received.
fn per_lead(got: &[Got]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in got {
        let b = body(g);
        m.entry(b["data"]["id"].as_str().unwrap().to_string())
            .or_default()
            .push(b["type"].as_str().unwrap().to_string());
    }
    m
}

fn expected_sequence() -> Vec<String> {
    // identify: subscriber → lead; hot: lead → sql, assigned; rejected:
    // sql → lead, recycled.
    [
        "lead.stage_changed",
        "lead.stage_changed",
        "lead.assigned",
        "lead.stage_changed",
        "lead.recycled",
    ]
    .map(String::from)
    .to_vec()
}

fn drive_leads(c: &Client, d: &Daemon, leads: &[&str]) {
    for l in leads {
        send(
            c,
            d,
            &json!({"id": format!("i-{l}"), "lead": l, "type": "identify", "traits": {"email": format!("{l}@x.io")}}),
        );
        send(
            c,
            d,
            &json!({"id": format!("h-{l}"), "lead": l, "type": "hot"}),
        );
        send(
            c,
            d,
            &json!({"id": format!("f-{l}"), "lead": l, "type": "sales_feedback", "properties": {"status": "rejected", "reason": "no budget"}}),
        );
    }
}

#[test]
fn webhooks_are_signed_in_order_and_retried_after_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), 2);
    let rules = webhook_rules(dir.path(), rx.addr);
    for db in backends("routing_webhooks", dir.path()) {
        rx.got.lock().unwrap().clear();
        let d = Daemon::start_with(
            &db,
            &rules,
            None,
            &[("NURTURE_TEST_WEBHOOK_SECRET", SECRET)],
        );
        let c = client();
        drive_leads(&c, &d, &["w1", "w2"]);
        let got = eventually(30, "ten webhooks delivered", || {
            let g = rx.delivered();
            (g.len() >= 10).then_some(g)
        });
        assert_eq!(got.len(), 10);
        for g in &got {
            assert!(signature_ok(g), "bad signature: {g:?}");
            let b = body(g);
            assert!(b["timestamp"].as_str().unwrap().ends_with('Z'), "{b}");
            assert!(
                b["data"]["stage"].is_string() && b["data"]["score"].is_i64(),
                "{b}"
            );
        }
        let order = per_lead(&got);
        assert_eq!(order["w1"], expected_sequence());
        assert_eq!(order["w2"], expected_sequence());
        let assigned = got
            .iter()
            .map(body)
            .find(|b| b["type"] == "lead.assigned")
            .unwrap();
        assert_eq!(assigned["data"]["owner"], json!("a"));
        assert_eq!(
            assigned["data"]["change"],
            json!({"owner": "a", "rule": "r"})
        );
        // The two 500s were retried with the same webhook-id.
        let all = rx.all();
        let failed: Vec<&Got> = all.iter().filter(|g| g.status == 500).collect();
        assert_eq!(failed.len(), 2);
        for f in failed {
            assert!(
                got.iter().any(|g| g.id == f.id && g.body == f.body),
                "{f:?} never retried"
            );
        }
        // Every id once among the deliveries; every row marked sent.
        let mut ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 10);
        let rows = eventually(10, "rows marked sent", || {
            let rows = outbox(&db, "webhook");
            rows.iter().all(|r| r.state == "sent").then_some(rows)
        });
        assert_eq!(rows.len(), 10);
        assert!(rows.iter().any(|r| r.attempts >= 2), "{rows:?}");
        let m = c.get(d.url("/metrics")).send().unwrap().text().unwrap();
        assert!(
            metric(&m, "nurture_webhooks_delivered_total") >= 10.0,
            "{m}"
        );
        d.stop();
    }
}

#[test]
fn webhooks_wait_for_a_receiver_that_is_down_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends("routing_webhooks_down", dir.path()) {
        // A port with nobody listening, for now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let rules = webhook_rules(dir.path(), addr);
        let env = [("NURTURE_TEST_WEBHOOK_SECRET", SECRET)];
        let d = Daemon::start_with(&db, &rules, None, &env);
        let c = client();
        drive_leads(&c, &d, &["d1"]);
        eventually(20, "a failed attempt", || {
            let rows = outbox(&db, "webhook");
            (rows.len() == 5 && rows[0].attempts >= 2 && rows[0].last_error.is_some()).then_some(())
        });
        let rows = outbox(&db, "webhook");
        assert!(rows.iter().all(|r| r.state != "sent"), "{rows:?}");
        assert!(
            rows[1..].iter().all(|r| r.attempts == 0),
            "later webhooks wait for the first: {rows:?}"
        );
        d.kill9();
        // As if a process died mid-send: its lease has run out.
        db_exec(
            &db,
            &format!(
                "UPDATE outbox SET state = 'sending', next_at = 0 WHERE seq = {}",
                rows[0].seq
            ),
        );

        let rx = Receiver::start(std::net::TcpListener::bind(addr).unwrap(), 0);
        let d = Daemon::start_with(&db, &rules, None, &env);
        let got = eventually(30, "all five delivered after the restart", || {
            let g = rx.delivered();
            (g.len() >= 5).then_some(g)
        });
        assert!(got.iter().all(signature_ok));
        assert_eq!(per_lead(&got)["d1"], expected_sequence());
        eventually(10, "rows marked sent", || {
            outbox(&db, "webhook")
                .iter()
                .all(|r| r.state == "sent")
                .then_some(())
        });
        d.stop();
    }
}

/// Two daemons on one PostgreSQL database deliver each webhook once.
#[test]
fn two_processes_on_postgres_deliver_each_webhook_once() {
    let Some(db) = postgres_url("routing_webhooks_two") else {
        return skip(
            "two_processes_on_postgres_deliver_each_webhook_once",
            NO_POSTGRES,
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), 0);
    let rules = webhook_rules(dir.path(), rx.addr);
    let env = [("NURTURE_TEST_WEBHOOK_SECRET", SECRET)];
    let a = Daemon::start_with(&db, &rules, None, &env);
    let b = Daemon::start_with(&db, &rules, None, &env);
    let c = client();
    let leads: Vec<String> = (0..12).map(|i| format!("p{i:02}")).collect();
    for (i, l) in leads.iter().enumerate() {
        drive_leads(&c, if i % 2 == 0 { &a } else { &b }, &[l.as_str()]);
    }
    let want = leads.len() * 5;
    eventually(60, "every webhook delivered", || {
        (rx.delivered().len() >= want).then_some(())
    });
    // One database: once its outbox is empty, no webhook can follow.
    settled(&c, &a, 30, false);
    let got = rx.all();
    assert_eq!(got.len(), want, "each webhook sent once");
    let order = per_lead(&got);
    for l in &leads {
        assert_eq!(order[l], expected_sequence(), "lead {l}");
    }
    a.stop();
    b.stop();
}
