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
    copy_rules(dir, "candidate", true)
}

/// A copy of the example rules in `dir/name` (plugins found where they
/// are), changed as [`candidate`] says if `change`.
fn copy_rules(dir: &std::path::Path, name: &str, change: bool) -> std::path::PathBuf {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for f in [
        "nurture.yaml",
        "routing.yaml",
        "plugins.yaml",
        "scoring.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join("rules").join(f)).unwrap();
        let mut text = text.replace("../plugins/", &format!("{}/plugins/", repo().display()));
        if change {
            text = text
                .replace("mql: 'lead.score >= 50'", "mql: 'lead.score >= 60'")
                .replacen(
                    "points: 10\n    limit: { times: 3, per: 30d }",
                    "points: 20\n    limit: { times: 3, per: 30d }",
                    1,
                );
        }
        std::fs::write(to.join(f), text).unwrap();
    }
    to
}

fn example_events() -> Vec<Value> {
    std::fs::read_to_string(repo().join("rules/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_daemon_previews_a_candidate_beside_its_rules_while_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let rules = copy_rules(dir.path(), "rules", false);
    candidate(dir.path());
    let broken = copy_rules(dir.path(), "broken", false);
    std::fs::write(
        broken.join("scoring.yaml"),
        "stages:\n  mql: 'lead.scores >= 1'\n",
    )
    .unwrap();
    let db = sqlite_url(dir.path());
    let d = Daemon::start(&db, &rules, None);
    let c = client();
    let (s, r) = post(
        &c,
        &d.url("/v1/events"),
        &json!({ "batch": example_events() }),
    );
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    settled(&c, &d, 60, false);
    let before = lead(&c, &d, "u2").unwrap();

    let (s, r) = post(
        &c,
        &d.url("/v1/rules/preview"),
        &json!({"path": "candidate", "until": "2026-02-20"}),
    );
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    let id = r["id"].as_u64().unwrap();
    let done = eventually(60, "the preview", || {
        let (_, p) = get(&c, &d.url(&format!("/v1/rules/preview/{id}")));
        (p["state"] != "running").then_some(p)
    });
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["summary"]["leads"], 3, "{done}");
    let u2 = done["leads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["lead"] == "u2")
        .unwrap_or_else(|| panic!("{done}"));
    assert_eq!(u2["base"]["score"], 7);
    assert_eq!(u2["candidate"]["score"], 17);
    // Serving all along; the preview changed nothing.
    assert_eq!(lead(&c, &d, "u2").unwrap()["ledger"], before["ledger"]);

    // Candidates that do not load, or lie elsewhere.
    let (s, r) = post(&c, &d.url("/v1/rules/preview"), &json!({"path": "broken"}));
    assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("scoring.yaml:2:14: stages.mql:"),
        "{message}"
    );
    assert!(message.contains("did you mean `lead.score`?"), "{message}");
    for outside in ["..", "/etc", "rules/../.."] {
        let (s, r) = post(&c, &d.url("/v1/rules/preview"), &json!({"path": outside}));
        assert!(
            s == StatusCode::FORBIDDEN || s == StatusCode::BAD_REQUEST,
            "{outside}: {s} {r}"
        );
    }
    let (s, _) = get(&c, &d.url("/v1/rules/preview/999"));
    assert_eq!(s, StatusCode::NOT_FOUND);
    let gone = c.delete(d.url("/v1/rules/preview/999")).send().unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    d.stop();
}

fn nurture(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

/// A copy of the example rules in `dir/name` with `from` replaced by `to`
/// in `file`.
fn edited(dir: &std::path::Path, name: &str, file: &str, from: &str, to: &str) -> String {
    let d = copy_rules(dir, name, false);
    let text = std::fs::read_to_string(d.join(file)).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(d.join(file), text.replacen(from, to, 1)).unwrap();
    d.display().to_string()
}

/// What `simulate` prints for `rules` and `events` up to `until`, by lead:
/// what a comparison compares of each.
fn outcomes(
    rules: &str,
    events: &std::path::Path,
    until: &str,
) -> std::collections::BTreeMap<String, Value> {
    let out = nurture(&[
        "simulate",
        rules,
        "--events",
        events.to_str().unwrap(),
        "--until",
        until,
    ]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let emails: Vec<String> = v["emails"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| format!("{}#{}", e["campaign"].as_str().unwrap(), e["step"]))
                .collect();
            let outcome = json!({"stage": v["stage"], "score": v["score"], "fit": v["fit"],
                                 "owner": v["owner"], "emails": emails});
            (v["lead"].as_str().unwrap().to_string(), outcome)
        })
        .collect()
}

#[test]
fn replay_differs_where_two_simulate_runs_differ_for_each_kind_of_edit() {
    let dir = tempfile::tempdir().unwrap();
    let (file, events) = generated(dir.path(), 300, 3_000, 11, 40);
    let db = sqlite_url(dir.path());
    let d = Daemon::start(&db, &repo().join("rules"), None);
    let c = client();
    for batch in events.chunks(500) {
        let (s, r) = post(&c, &d.url("/v1/events"), &json!({ "batch": batch }));
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    }
    let until = now_rfc3339(-86_400);
    let edits = [
        edited(
            dir.path(),
            "threshold",
            "scoring.yaml",
            "mql: 'lead.score >= 50'",
            "mql: 'lead.score >= 40'",
        ),
        edited(
            dir.path(),
            "points",
            "scoring.yaml",
            "points: 15",
            "points: 25",
        ),
        edited(
            dir.path(),
            "limit",
            "scoring.yaml",
            "limit: { times: 3, per: 30d }",
            "limit: { times: 1, per: 30d }",
        ),
        edited(
            dir.path(),
            "delay",
            "nurture.yaml",
            "after: 7d",
            "after: 60d",
        ),
        edited(
            dir.path(),
            "capacity",
            "routing.yaml",
            "capacity: 25",
            "capacity: 1",
        ),
    ];
    let base = outcomes("rules", &file, &until);
    // A client goes on writing while replays read (events after `until`:
    // what the replays compare stays the same).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), d.url("/v1/events"));
        std::thread::spawn(move || {
            let c = client();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<Value> = (0..50)
                    .map(|i| json!({"id": format!("w{n}-{i}"), "lead": format!("writer-{i}"), "type": "page_viewed"}))
                    .collect();
                let (s, _) = post(&c, &url, &json!({ "batch": batch }));
                assert_eq!(s, StatusCode::ACCEPTED);
                n += 1;
            }
            n
        })
    };
    for cand in &edits {
        let run = nurture(&[
            "replay",
            "--database-url",
            &db,
            "--rules",
            cand,
            "--until",
            &until,
            "--format",
            "json",
        ]);
        assert!(run.status.success(), "{cand}: {run:?}");
        let lines: Vec<Value> = String::from_utf8(run.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let theirs = outcomes(cand, &file, &until);
        let differ: Vec<&String> = base.keys().filter(|id| base[*id] != theirs[*id]).collect();
        assert!(!differ.is_empty(), "{cand}: the edit changes nothing");
        let reported: Vec<&str> = lines[..lines.len() - 1]
            .iter()
            .map(|l| l["lead"].as_str().unwrap())
            .collect();
        assert_eq!(reported, differ, "{cand}");
        for l in &lines[..lines.len() - 1] {
            let id = l["lead"].as_str().unwrap();
            assert_eq!(l["base"], base[id], "{cand}: {id}");
            assert_eq!(l["candidate"], theirs[id], "{cand}: {id}");
        }
        assert_eq!(
            lines.last().unwrap()["summary"]["leads"],
            base.len(),
            "{cand}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0, "the writer wrote");

    // A candidate with errors: each with its place, exit 2.
    let broken = edited(
        dir.path(),
        "broken",
        "scoring.yaml",
        "lead.score >= 50",
        "lead.scores >= 50",
    );
    let run = nurture(&["replay", "--database-url", &db, "--rules", &broken]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("scoring.yaml:") && stderr.contains("did you mean `lead.score`?"),
        "{stderr}"
    );
    d.stop();
}

#[test]
fn replay_compares_a_candidate_on_stored_history_and_leaves_erased_leads_out() {
    let dir = tempfile::tempdir().unwrap();
    let cand = candidate(dir.path());
    let cand = cand.to_str().unwrap();
    let mut batch = example_events();
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
