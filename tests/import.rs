//! Importing history (`nurture import`, `POST /v1/events?import=true`):
//! two months of another tool's events end where `simulate` ends, and the
//! drip emails, notices and webhooks they decide are recorded as withheld,
//! never sent; what the daemon decides after the import is sent as ever.

use crate::support::smtp::SmtpServer;
use crate::support::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::process::Command;

#[test]
fn an_import_of_history_ends_as_simulate_does_and_sends_nothing_it_decided() {
    let dir = tempfile::tempdir().unwrap();
    let rules = repo().join("rules");
    // Three thousand events about 60 days ago: every drip step, SLA and
    // nightly decay they lead to has come due since.
    let (file, _) = generated(dir.path(), 300, 3_000, 5, 60);
    for db in backends("import", dir.path()) {
        let smtp = SmtpServer::start();
        let url = smtp.url();
        let d = Daemon::start_args(&db, &rules, None, &["--smtp-url", url.as_str()]);
        let out = Command::new(BIN)
            .arg("import")
            .arg(&file)
            .args(["--url", &d.base])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{db}: {out:?}");
        assert!(
            stdout.starts_with("imported 3000 events (0 already there)"),
            "{stdout}"
        );
        let c = client();
        settled(&c, &d, 120, false);

        // Each lead as simulate has it now.
        let simulated = simulate_until_now(&rules, &file);
        assert!(simulated.len() > 250, "{}", simulated.len());
        let keys = [
            "stage",
            "score",
            "fit",
            "consent",
            "ledger",
            "transitions",
            "emails",
        ];
        for want in &simulated {
            let id = want["lead"].as_str().unwrap();
            let got = lead(&c, &d, id).unwrap_or_else(|| panic!("{db}: {id} missing"));
            for k in keys {
                assert_eq!(got[k], want[k], "{db}: {id}.{k}");
            }
        }

        // Nothing went out: the decisions are on the timelines, withheld.
        let decided: usize = simulated
            .iter()
            .map(|l| l["emails"].as_array().map_or(0, Vec::len))
            .sum();
        assert!(decided > 100, "the history decided drips ({decided})");
        let m = c.get(d.url("/metrics")).send().unwrap().text().unwrap();
        let withheld = metric(&m, "nurture_withheld_total");
        assert!(withheld >= decided as f64, "{db}: {withheld} < {decided}");
        // Kept as decided (with their Message-IDs), in no state a sender takes.
        for kind in ["email", "notification", "webhook"] {
            let states: std::collections::BTreeSet<String> =
                outbox(&db, kind).into_iter().map(|r| r.state).collect();
            assert!(
                states.iter().all(|s| s == "withheld"),
                "{db}: {kind}: {states:?}"
            );
        }
        assert!(!outbox(&db, "email").is_empty(), "{db}");
        let emailed = simulated
            .iter()
            .find(|l| l["emails"].as_array().is_some_and(|e| !e.is_empty()))
            .unwrap();
        let id = emailed["lead"].as_str().unwrap();
        let (_, timeline) = get(&c, &d.url(&format!("/v1/leads/{id}/timeline")));
        let withheld: Vec<&Value> = timeline["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "withheld")
            .collect();
        assert!(!withheld.is_empty(), "{db}: {timeline}");
        assert_eq!(withheld[0]["detail"]["reason"], "imported history");
        assert_eq!(withheld[0]["detail"]["effect"], "send_email");

        // Live events after the import are decided and sent as ever: a new
        // lead that becomes an SQL now is routed, and its owner told (the
        // welcome waits for the sending window).
        let now = now_rfc3339(0);
        let live = |n: u32, kind: &str, extra: Value| {
            let mut e = json!({"id": format!("live-{n}"), "lead": "live", "type": kind, "at": now});
            e.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            e
        };
        let pricing = json!({"properties": {"path": "/pricing"}});
        let batch = vec![
            live(
                1,
                "identify",
                json!({"traits": {"email": "live@acme.example", "industry": "software", "employees": 1500, "consent": "opted_in"}}),
            ),
            live(2, "form_submitted", json!({"properties": {"form": "demo"}})),
            live(3, "page_viewed", pricing.clone()),
            live(4, "page_viewed", pricing.clone()),
            live(5, "page_viewed", pricing),
            live(6, "email_clicked", json!({})),
        ];
        let (s, r) = post(&c, &d.url("/v1/events"), &json!({ "batch": batch }));
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        eventually(30, "the owner's notice after the import", || {
            (!smtp.messages().is_empty()).then_some(())
        });
        settled(&c, &d, 60, false);
        let sent = smtp.messages();
        assert_eq!(sent.len(), 1, "{db}: {sent:?}");
        assert_eq!(
            sent[0].header("Subject").as_deref(),
            Some("New lead for you: live"),
            "{db}"
        );
        assert_eq!(lead(&c, &d, "live").unwrap()["stage"], "sql");

        // The same file again: every event already there, nothing new.
        let again = Command::new(BIN)
            .arg("import")
            .arg(&file)
            .args(["--url", &d.base])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&again.stdout)
                .starts_with("imported 0 events (3000 already there)"),
            "{again:?}"
        );
        d.stop();
    }
}

#[test]
fn imported_is_not_an_event_field_nor_an_import_one_can_join_unopened() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let d = Daemon::start(&db, &repo().join("rules"), None);
    let c = client();
    let (s, r) = post(
        &c,
        &d.url("/v1/events"),
        &json!({"id": "e1", "lead": "u1", "type": "identify", "imported_at": "2099-01-01T00:00:00Z"}),
    );
    assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
    assert_eq!(r["error"]["field"], "imported_at", "{r}");
    // Nor is an import one can join without opening it.
    let (s, r) = post(
        &c,
        &d.url("/v1/events?import=made-up"),
        &json!({"id": "e1", "lead": "u1", "type": "identify"}),
    );
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("POST /v1/imports"),
        "{r}"
    );
    assert!(lead(&c, &d, "u1").is_none());
    d.stop();
}
