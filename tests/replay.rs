//! `nurture replay`: a rules change backtested on the history a running
//! daemon stored, read from its database without stopping it; erased leads
//! left out; `--export` gives the same history as a file, on which
//! `simulate --compare` gives the same report.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::process::Command;

/// The example rules with a higher MQL bar and pricing views worth double.
fn candidate(dir: &std::path::Path) -> std::path::PathBuf {
    let cand = dir.join("candidate");
    std::fs::create_dir_all(&cand).unwrap();
    for f in [
        "nurture.yaml",
        "routing.yaml",
        "plugins.yaml",
        "scoring.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join("rules").join(f)).unwrap();
        let text = text
            .replace("mql: 'lead.score >= 50'", "mql: 'lead.score >= 60'")
            .replace("../plugins/", &format!("{}/plugins/", repo().display()))
            .replacen(
                "points: 10\n    limit: { times: 3, per: 30d }",
                "points: 20\n    limit: { times: 3, per: 30d }",
                1,
            );
        std::fs::write(cand.join(f), text).unwrap();
    }
    cand
}

fn nurture(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

#[test]
fn replay_compares_a_candidate_on_stored_history_and_leaves_erased_leads_out() {
    let dir = tempfile::tempdir().unwrap();
    let cand = candidate(dir.path());
    let cand = cand.to_str().unwrap();
    let events = std::fs::read_to_string(repo().join("rules/events.jsonl")).unwrap();
    let mut batch: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The example repeats one event (an id seen before is stored once).
    let kept = batch
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    // A lead whose data is erased before the replay.
    batch.push(
        json!({"id": "x1", "lead": "gone", "type": "identify", "at": "2026-01-07T10:00:00Z",
                      "traits": {"email": "gone@acme.example", "consent": "opted_in"}}),
    );
    for db in backends("replay", dir.path()) {
        let d = Daemon::start(&db, &repo().join("rules"), None);
        let c = client();
        let (s, r) = post(&c, &d.url("/v1/events"), &json!({ "batch": batch }));
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
        settled(&c, &d, 60, false);
        let erased = c.delete(d.url("/v1/leads/gone")).send().unwrap();
        assert_eq!(erased.status(), StatusCode::NO_CONTENT);

        // While the daemon runs.
        let args = |extra: &[&str]| {
            let mut a = vec![
                "replay",
                "--database-url",
                db.as_str(),
                "--until",
                "2026-02-20",
            ];
            a.extend_from_slice(extra);
            nurture(&a)
        };
        let run = args(&["--rules", cand, "--format", "json"]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{db}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{kept} events of 3 leads read; 1 erased and 0 unreadable leads left out"
            )),
            "{db}: {stderr}"
        );
        let replayed = String::from_utf8(run.stdout).unwrap();
        let lines: Vec<Value> = replayed
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let summary = &lines.last().unwrap()["summary"];
        assert_eq!(summary["leads"], 3, "{db}: {summary}");
        assert!(lines.iter().all(|l| l["lead"] != "gone"), "{db}");
        let u2 = lines
            .iter()
            .find(|l| l["lead"] == "u2")
            .expect("u2 differs");
        assert_eq!(u2["base"]["score"], 7, "{db}: {u2}");
        assert_eq!(u2["candidate"]["score"], 17, "{db}: {u2}");
        assert_eq!(u2["first_difference"]["part"], "ledger");

        // The daemon went on meanwhile.
        let (s, _) = post(
            &c,
            &d.url("/v1/events"),
            &json!({"id": "after", "lead": "u4", "type": "page_viewed", "at": "2026-01-08T10:00:00Z"}),
        );
        assert_eq!(s, StatusCode::ACCEPTED);
        eventually(30, "the event after the replay", || lead(&c, &d, "u4"));

        // The same history as a file: the same report from simulate.
        let file = dir.path().join("history.jsonl");
        let run = args(&["--export", file.to_str().unwrap()]);
        assert!(run.status.success(), "{db}: {run:?}");
        let exported = std::fs::read_to_string(&file).unwrap();
        assert_eq!(exported.lines().count(), kept + 1, "{db}: {exported}");
        assert!(!exported.contains("gone"), "{db}: {exported}");
        let sim = nurture(&[
            "simulate",
            "rules",
            "--events",
            file.to_str().unwrap(),
            "--until",
            "2026-02-20",
            "--compare",
            cand,
            "--format",
            "json",
        ]);
        assert!(sim.status.success(), "{sim:?}");
        let from_file: Vec<Value> = String::from_utf8(sim.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // u4 came after the first replay: the rest is the same.
        let without_u4: Vec<&Value> = from_file.iter().filter(|l| l["lead"] != "u4").collect();
        assert_eq!(without_u4.len(), lines.len(), "{db}");
        for (a, b) in without_u4.iter().zip(&lines) {
            if a.get("summary").is_none() {
                assert_eq!(*a, b, "{db}");
            }
        }
        d.stop();
    }
}

#[test]
fn replay_says_plainly_what_is_wrong_with_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}/none.db", dir.path().display());
    let run = nurture(&["replay", "--database-url", &missing, "--rules", "rules"]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!dir.path().join("none.db").exists());
    let run = nurture(&["replay", "--database-url", &missing]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("--rules <CANDIDATE_DIR>"),
        "{run:?}"
    );
}
