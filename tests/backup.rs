//! Backups that don't resend (docs/operations.md): a backup taken with mail
//! pending, restored after that mail went out, sends nothing while the
//! outbox is held (`serve --hold-outbox`); `nurture outbox cancel` drops
//! what waited, and mail decided afterwards goes out as usual.

use crate::support::smtp::SmtpServer;
use crate::support::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;

const RULES: &str = r#"
stages:
  lead: 'lead.email != ""'
templates:
  - { name: hello, subject: Hello, text: "Hi {{ unsubscribe_url }}" }
campaigns:
  - name: drip
    enroll: 'lead.stage == "lead"'
    steps:
      - { after: 0s, template: hello }
settings:
  email: { from: "Test <t@example.com>", require_consent: false }
"#;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
}

fn nurture(args: &[&str]) -> String {
    run(Command::new(BIN).args(args))
}

/// Takes a backup of the database as docs/operations.md says: `pg_dump`,
/// or SQLite's `VACUUM INTO` (a consistent copy while the daemon writes).
fn backup(db: &str, to: &Path) {
    if db.starts_with("postgres") {
        run(Command::new("pg_dump")
            .args(["--format=custom", "--file"])
            .arg(to)
            .arg(db));
    } else {
        let to = to.display().to_string();
        db_exec(db, &format!("VACUUM INTO '{to}'"));
    }
}

/// Puts the backup back, the daemon stopped.
fn restore(db: &str, from: &Path, dir: &Path) {
    if db.starts_with("postgres") {
        run(Command::new("pg_restore")
            .args([
                "--clean",
                "--if-exists",
                "--single-transaction",
                "--dbname",
                db,
            ])
            .arg(from));
    } else {
        for f in ["nurture.db-wal", "nurture.db-shm"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        std::fs::copy(from, dir.join("nurture.db")).unwrap();
    }
}

fn health(c: &Client, d: &Daemon) -> serde_json::Value {
    get(c, &d.url("/healthz")).1
}

#[test]
fn a_restored_backup_sends_nothing_until_an_operator_says() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir(dir.path(), RULES);
    for db in backends("backup_restore", dir.path()) {
        let file = dir.path().join(if db.starts_with("postgres") {
            "dump.pgc"
        } else {
            "backup.db"
        });
        let _ = std::fs::remove_file(&file);
        let smtp = SmtpServer::start();
        let smtp_url = smtp.url();
        let c = client();
        // Five emails decided and held: pending when the backup is taken.
        let d = Daemon::start_args(
            &db,
            &rules,
            None,
            &["--smtp-url", &smtp_url, "--hold-outbox"],
        );
        let batch: Vec<_> = (0..5)
            .map(|i| {
                json!({"id": format!("i{i}"), "lead": format!("u{i}"), "type": "identify",
                            "traits": {"email": format!("u{i}@leads.example")}})
            })
            .collect();
        let (s, _) = post(&c, &d.url("/v1/events"), &json!({ "batch": batch }));
        assert_eq!(s, StatusCode::ACCEPTED);
        eventually(30, "five emails pending", || {
            let h = health(&c, &d);
            (h["events_pending"] == 0 && h["outbox_pending"] == 5).then_some(())
        });
        backup(&db, &file);
        // Released: they go out.
        let out = nurture(&["outbox", "release", "--database-url", &db]);
        assert!(out.contains("released: 5 messages pending"), "{out}");
        eventually(30, "five emails sent", || {
            (smtp.messages().len() == 5).then_some(())
        });
        settled(&c, &d, 30, false);
        d.stop();

        // The backup restored: the five are pending in it again. It was
        // taken while held (to have mail pending for certain); a backup of
        // a daemon sending as usual has no hold, so the hold is lifted here
        // and the restore's `--hold-outbox` is what must hold the mail.
        restore(&db, &file, dir.path());
        db_exec(
            &db,
            "DELETE FROM daemon_settings WHERE name = 'outbox_hold'",
        );
        assert!(
            nurture(&["outbox", "status", "--database-url", &db]).starts_with("outbox not held")
        );
        let d = Daemon::start_args(
            &db,
            &rules,
            None,
            &["--smtp-url", &smtp_url, "--hold-outbox"],
        );
        let metrics = || c.get(d.url("/metrics")).send().unwrap().text().unwrap();
        // The senders have looked, more than once, and found the outbox held.
        eventually(30, "the senders to find the outbox held", || {
            (metric(&metrics(), "nurture_outbox_held_polls_total") >= 4.0).then_some(())
        });
        let h = health(&c, &d);
        assert_eq!(h["outbox_pending"], json!(5), "{db}: {h}");
        assert_eq!(h["status"], json!("degraded"), "{db}: {h}");
        assert!(h["outbox_held_since"].is_string(), "{db}: {h}");
        assert_eq!(smtp.messages().len(), 5, "{db}: nothing resent while held");
        let out = nurture(&["outbox", "status", "--database-url", &db]);
        assert!(out.starts_with("outbox held since"), "{out}");

        // Cancelled: never sent; the hold is lifted, so new mail goes out.
        let out = nurture(&["outbox", "cancel", "--database-url", &db]);
        assert!(out.contains("cancelled 5 pending messages"), "{db}: {out}");
        let ev = json!({"id": "n1", "lead": "n1", "type": "identify", "traits": {"email": "n1@leads.example"}});
        let (s, _) = post(&c, &d.url("/v1/events"), &ev);
        assert_eq!(s, StatusCode::ACCEPTED);
        eventually(30, "the new lead's email sent", || {
            (smtp.messages().len() == 6).then_some(())
        });
        settled(&c, &d, 30, false);
        let sent = smtp.messages();
        assert_eq!(sent.len(), 6, "{db}");
        assert_eq!(sent[5].to, vec!["n1@leads.example".to_string()], "{db}");
        let cancelled = outbox(&db, "email")
            .into_iter()
            .filter(|r| r.state == "cancelled")
            .count();
        assert_eq!(cancelled, 5, "{db}");
        let (_, t) = get(&c, &d.url("/v1/leads/u0/timeline"));
        assert!(t.to_string().contains("nurture outbox cancel"), "{db}: {t}");
        d.stop();
    }
}
