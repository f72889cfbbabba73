//! Reliability under crashes: the daemon is killed with SIGKILL again and
//! again while clients send events and it sends email; nothing acknowledged
//! may be lost or applied twice, and no email may be lost or sent twice
//! (beyond the documented repeat of a message whose outcome a crash left
//! unknown, which carries the same Message-ID and is marked on the timeline).
//!
//! And under a full disk, a read-only database, and broken rules files
//! written while clients send: clear errors, no corruption, nothing
//! acknowledged lost, and recovery without help once the cause is gone.

use crate::support::smtp::SmtpServer;
use crate::support::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    let (delivered, repeated) = assert_applied_and_mailed_once(db, &smtp, &acked, false);
    eprintln!(
        "{db}: {CYCLES} kills, {} events acknowledged and applied once, {delivered} emails delivered, {repeated} repeated after a crash",
        acked.len(),
    );
    d.stop();
}

/// Every acknowledged lead (one `identify` each, from the email rules) was
/// applied exactly once and got its one welcome email; a message that
/// arrived twice was resent because a crash left its first send's outcome
/// unknown, and the timeline says so. Returns the emails delivered and the
/// repeats.
///
/// `disk_failed`: the filesystem under SQLite was aborted by the kernel.
/// A write SQLite reported as failed may then still reach the disk, or one
/// reported as done may not (the journal is aborted mid-flight), so the
/// database may not know a send went out: a repeat need not be marked, but
/// there are no more than the sends that can be unrecorded at once
/// (the sender's `UNRECORDED`), and never two different messages for a step.
fn assert_applied_and_mailed_once(
    db: &str,
    smtp: &SmtpServer,
    acked: &[String],
    disk_failed: bool,
) -> (usize, usize) {
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
        // (Leads whose batch was stored but whose 202 never arrived get
        // their email too; only the acknowledged ones are owed one.)
        let all = acked.iter().all(|id| by_lead.contains_key(id.as_str()));
        if all || Instant::now() > deadline {
            break by_lead;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // A repeat's outcome is recorded a moment after the server took it:
    // wait until no send is under way or due, so the timeline has them all.
    eventually(60, "every send's outcome recorded", || {
        let open: i64 = with_db(db, async |pool| {
            use sqlx::Row;
            let now = chrono::Utc::now().timestamp_millis();
            sqlx::query(&format!(
                "SELECT COUNT(*) FROM outbox WHERE kind IN ('email', 'notification') \
                 AND (state IN ('sending', 'uncertain') OR (state = 'pending' AND next_at <= {now}))"
            ))
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0)
        });
        (open == 0).then_some(())
    });
    // Read the outcome straight from the database: events applied per lead,
    // and the sends the timeline marks as repeats after a crash.
    let applied: BTreeMap<String, i64> = with_db(db, async |pool| {
        use sqlx::Row;
        // (An `identify` applied twice would change nothing more: the
        // emails below are what a repeat would show in.)
        let rows = sqlx::query(
            "SELECT lead, COUNT(*) FROM events WHERE processed_at IS NOT NULL GROUP BY lead",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        rows.iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
            .collect()
    });
    let uncertain = uncertain_sends(db);
    // No acknowledged event lost, none applied twice; no email lost.
    for id in acked {
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
    if disk_failed {
        assert!(repeated.len() <= 256, "{} repeats", repeated.len());
    }
    for mid in &repeated {
        if uncertain.contains(*mid) || disk_failed {
            continue;
        }
        // What the database says about it, for the failure message.
        let like = format!("%{}%", mid.trim_matches(['<', '>']));
        let rows: Vec<String> = with_db(db, async |pool| {
            use sqlx::Row;
            let q = "SELECT 'outbox ' || state || ' attempts ' || attempts FROM outbox WHERE payload LIKE $1                      UNION ALL SELECT 'timeline ' || kind || ' ' || detail FROM timeline WHERE detail LIKE $1";
            sqlx::query(q)
                .bind(&like)
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect()
        });
        panic!("{mid} arrived twice without a crash to explain it: {rows:?}");
    }
    (got.len(), repeated.len())
}

// ---------------------------------------------------------------------------
// A full disk, a read-only database.

/// A filesystem mounted for one test, unmounted when dropped (also when the
/// test fails; the daemon using it is dropped, so killed, first).
struct Mount {
    dir: PathBuf,
    /// The loop device under an ext4 image (`/dev/loop3`), attached by the
    /// test itself and kept across unmount and remount, so a remount never
    /// races the kernel's asynchronous release of an auto-cleared device.
    loop_dev: Option<String>,
}

/// Runs a command; its stderr on failure.
fn sh(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Mount {
    /// A tmpfs of `size` on `dir`, or why not (not root, no permission).
    fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).unwrap();
        let d = dir.to_str().unwrap();
        sh(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", d],
        )?;
        Ok(Mount {
            dir: dir.to_path_buf(),
            loop_dev: None,
        })
    }

    /// An ext4 image on a loop device that the kernel remounts read-only on
    /// an error, as a disk that fails does; or why not.
    fn ext4(image: &Path, dir: &Path) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).unwrap();
        let img = image.to_str().unwrap();
        sh("truncate", &["-s", "64M", img])?;
        sh("mkfs.ext4", &["-q", "-F", img])?;
        let out = Command::new("losetup")
            .args(["--find", "--show", img])
            .output()
            .map_err(|e| format!("losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup --find --show {img}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let m = Mount {
            dir: dir.to_path_buf(),
            loop_dev: Some(dev),
        };
        m.mount_ext4()?;
        Ok(m)
    }

    /// Mounts the loop device on `dir`; retried for a few seconds, as a
    /// device just unmounted can be busy for a moment.
    fn mount_ext4(&self) -> Result<(), String> {
        let dev = self
            .loop_dev
            .as_deref()
            .expect("an ext4 mount has a loop device");
        let d = self.dir.to_str().unwrap();
        let mut last = String::new();
        for _ in 0..20 {
            match sh("mount", &["-o", "errors=remount-ro", dev, d]) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(last)
    }

    fn remount(&self, opts: &str) {
        sh(
            "mount",
            &["-o", &format!("remount,{opts}"), self.dir.to_str().unwrap()],
        )
        .unwrap();
    }

    /// The kernel's name for the device (`loop0`).
    fn device(&self) -> String {
        let dev = self
            .loop_dev
            .as_deref()
            .expect("an ext4 mount has a loop device");
        dev.rsplit('/').next().unwrap().to_string()
    }

    fn unmount(&self) {
        let d = self.dir.to_str().unwrap();
        if sh("umount", &[d]).is_err() {
            let _ = sh("umount", &["-l", d]);
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let d = self.dir.to_str().unwrap();
        let mounted = Command::new("mountpoint")
            .args(["-q", d])
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            self.unmount();
        }
        if let Some(dev) = &self.loop_dev {
            let _ = sh("losetup", &["-d", dev]);
        }
    }
}

/// Clients sending batches of new opted-in leads (one `identify` each),
/// each batch sent again until it is acknowledged, as a careful client
/// does. Every answer other than 202 is kept.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    /// Status (0: no answer) and body of each refusal.
    refusals: Arc<Mutex<Vec<(u16, String)>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(base: &str, prefix: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let refusals: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
        let threads = (0..2)
            .map(|w| {
                let (stop, acked, refusals) = (stop.clone(), acked.clone(), refusals.clone());
                let (base, prefix) = (base.to_string(), prefix.to_string());
                std::thread::spawn(move || {
                    let c = client();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let ids: Vec<String> =
                            (i..i + 10).map(|k| format!("{prefix}{w}-{k}")).collect();
                        i += 10;
                        let batch: Vec<Value> = ids
                            .iter()
                            .map(|id| json!({"id": id, "lead": id, "type": "identify",
                                "traits": {"email": format!("{id}@leads.example"), "consent": "opted_in"}}))
                            .collect();
                        let body = json!({ "batch": batch });
                        while !stop.load(Ordering::Relaxed) {
                            match c.post(format!("{base}/v1/events")).json(&body).send() {
                                Ok(r) if r.status() == StatusCode::ACCEPTED => {
                                    acked.lock().unwrap().extend(ids);
                                    break;
                                }
                                Ok(r) => {
                                    let status = r.status().as_u16();
                                    refusals
                                        .lock()
                                        .unwrap()
                                        .push((status, r.text().unwrap_or_default()));
                                }
                                Err(e) => refusals.lock().unwrap().push((0, e.to_string())),
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            refusals,
            threads,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn refusals(&self) -> Vec<(u16, String)> {
        self.refusals.lock().unwrap().clone()
    }

    /// Stops the clients (a batch still being retried is given up, and is
    /// not owed anything); returns what was acknowledged.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn healthz(c: &Client, d: &Daemon) -> (StatusCode, Value) {
    get(c, &d.url("/healthz"))
}

/// Waits until the daemon has met `n` more storage errors than now.
fn failing_on(c: &Client, d: &Daemon, n: u64) {
    let errors = || {
        let m = c.get(d.url("/metrics")).send().ok()?.text().ok()?;
        Some(metric(&m, "nurture_storage_errors_total"))
    };
    let start = eventually(10, "the metrics", errors);
    eventually(60, "more failed writes", || {
        errors().filter(|e| *e >= start + n as f64).map(|_| ())
    });
}

fn alive(d: &mut Daemon) {
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon exited: {:?}",
        d.child.try_wait()
    );
}

fn integrity_check(db: &str) -> String {
    with_db(db, async |pool| {
        use sqlx::Row;
        sqlx::query("PRAGMA integrity_check")
            .fetch_one(pool)
            .await
            .unwrap()
            .get::<String, _>(0)
    })
}

/// The daemon's log holds no panic; the lines around one if it does.
fn assert_no_panic(log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked")) {
        let around = lines[i.saturating_sub(5)..(i + 20).min(lines.len())].join("\n");
        panic!("the daemon panicked:\n{around}");
    }
}

fn email_rules() -> PathBuf {
    repo().join("tests/fixtures/email-rules")
}

/// Waits for a refusal (from the `from`th on) that names `cause`, and checks
/// that every refusal is a 503 that says the events were not stored.
fn refused_for(load: &Load, from: usize, cause: &str) -> String {
    let body = eventually(120, &format!("a request refused for {cause:?}"), || {
        load.refusals()
            .into_iter()
            .skip(from)
            .find(|(_, b)| b.contains(cause))
            .map(|(_, b)| b)
    });
    for (status, body) in load.refusals() {
        assert_eq!(status, 503, "refused with {status}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("events not stored: "), "{msg}");
    }
    body
}

/// After the database takes writes again, without a restart: events are
/// acknowledged again, `/healthz` is ok, everything acknowledged is applied
/// and mailed once, and the log names `cause` and holds no panic. Returns
/// the acknowledged ids, the refusals, and the emails delivered and repeated.
#[allow(clippy::too_many_arguments)]
fn recovered(
    load: Load,
    acked_before: usize,
    c: &Client,
    d: &Daemon,
    db: &str,
    smtp: &SmtpServer,
    log: &Path,
    cause: &str,
) -> (Vec<String>, usize, usize, usize) {
    eventually(90, "events acknowledged again", || {
        (load.acked() >= acked_before + 200).then_some(())
    });
    eventually(30, "/healthz ok again", || {
        (healthz(c, d).0 == StatusCode::OK).then_some(())
    });
    let refused = load.refusals().len();
    let acked = load.finish();
    eventually(120, "every acknowledged event applied", || {
        (pending(c, d) == 0.0).then_some(())
    });
    let (delivered, repeated) = assert_applied_and_mailed_once(db, smtp, &acked, false);
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.contains("ERROR") && text.contains(cause),
        "the cause is logged"
    );
    // Once when the writes start failing (and for each new cause) and once
    // when they succeed again (more than once only if the database
    // flapped), not once per retry: the ERROR lines are those, and a few
    // of other loops' first failures.
    let down = text.matches("database: refusing writes").count();
    let back = text.matches("database: writes succeed again after").count();
    let errors = text.lines().filter(|l| l.contains("ERROR")).count();
    let outage = text
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("database: "))
        .count();
    let failed = metric(
        &c.get(d.url("/metrics")).send().unwrap().text().unwrap(),
        "nurture_storage_errors_total",
    );
    eprintln!("outage log: {down} down, {back} back, {errors} ERROR lines, {failed} failed writes");
    assert!(
        down >= 1 && back == down,
        "{down} down, {back} back:\n{text}"
    );
    assert!(
        errors <= outage + 3,
        "{errors} ERROR lines, {outage} of them the outage's, for {failed} failed writes:\n{text}"
    );
    assert_no_panic(&text);
    (acked, refused, delivered, repeated)
}

/// The SQLite database fills its disk under load: requests are refused
/// with 503 and the cause, nothing crashes, and once the disk has room
/// again the daemon carries on by itself with nothing acknowledged lost.
#[test]
fn disk_full_refuses_clearly_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let disk = match Mount::tmpfs(&dir.path().join("disk"), "3m") {
        Ok(m) => m,
        Err(e) => {
            return skip(
                "disk_full",
                &format!("cannot mount a tmpfs (needs root on Linux): {e}"),
            );
        }
    };
    let db = sqlite_url(&disk.dir);
    let smtp = SmtpServer::start();
    let url = smtp.url();
    let log = dir.path().join("serve.log");
    let args = ["--smtp-url", url.as_str(), "--secret", "disk-full"];
    let mut d =
        Daemon::start_logged_env(&db, &email_rules(), &args, &[("NURTURE_LOG", "info")], &log);
    let c = client();
    let load = Load::start(&d.base, "f");

    // The disk fills: refused, with the cause, and /healthz says so.
    let body = refused_for(&load, 0, "database or disk is full");
    eprintln!("disk full: {body}");
    let at_full = load.acked();
    eventually(30, "/healthz to report the full disk", || {
        let (s, h) = healthz(&c, &d);
        (s == StatusCode::SERVICE_UNAVAILABLE && h["error"].as_str()?.contains("full"))
            .then_some(())
    });
    // It goes on meeting the fault (three more failed writes) and stays up.
    failing_on(&c, &d, 3);
    alive(&mut d);

    // Room again, no restart: events are taken again, and every one applied.
    disk.remount("size=256m");
    let (acked, refused, delivered, _) = recovered(
        load,
        at_full,
        &c,
        &d,
        &db,
        &smtp,
        &log,
        "database or disk is full",
    );
    d.stop();
    assert_eq!(integrity_check(&db), "ok");
    eprintln!(
        "disk full: {} events acknowledged ({at_full} before the disk filled), {refused} requests refused, {delivered} emails; integrity ok",
        acked.len()
    );
}

/// The disk under the SQLite database fails and the kernel remounts it
/// read-only (ext4 `errors=remount-ro`): requests are refused with 503 and
/// the cause, nothing crashes, the daemon stops cleanly; once the
/// filesystem is checked and mounted again, a restart applies everything
/// acknowledged, once. (A filesystem the daemon holds open cannot be
/// remounted read-only and back by hand, and one the kernel made read-only
/// is only writable again after it is unmounted.)
#[test]
fn read_only_sqlite_refuses_clearly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let disk = match Mount::ext4(&image, &dir.path().join("disk")) {
        Ok(m) => m,
        Err(e) => {
            return skip(
                "read_only_sqlite",
                &format!("cannot mount an ext4 image on a loop device (needs root on Linux): {e}"),
            );
        }
    };
    let db = sqlite_url(&disk.dir);
    let smtp = SmtpServer::start();
    let url = smtp.url();
    let log = dir.path().join("serve.log");
    let args = ["--smtp-url", url.as_str(), "--secret", "read-only"];
    let mut d =
        Daemon::start_logged_env(&db, &email_rules(), &args, &[("NURTURE_LOG", "info")], &log);
    let c = client();
    let load = Load::start(&d.base, "r");
    eventually(60, "some events acknowledged", || {
        (load.acked() >= 200).then_some(())
    });

    // The disk fails: the kernel makes the filesystem read-only.
    let trigger = format!("/sys/fs/ext4/{}/trigger_fs_error", disk.device());
    std::fs::write(&trigger, "nurture reliability test").unwrap();
    let body = refused_for(&load, 0, "events not stored");
    eprintln!("read-only: {body}");
    eventually(30, "/healthz to report it", || {
        let (s, h) = healthz(&c, &d);
        (s == StatusCode::SERVICE_UNAVAILABLE).then_some(h)
    });
    // It goes on meeting the fault (three more failed writes) and stays up.
    failing_on(&c, &d, 3);
    alive(&mut d);
    let refused = load.refusals().len();
    let acked = load.finish();
    d.stop();

    // The operator's repair: unmount, check, mount, start again.
    disk.unmount();
    let dev = disk.loop_dev.clone().unwrap();
    let _ = sh("e2fsck", &["-f", "-y", &dev]);
    disk.mount_ext4()
        .expect("mount the repaired filesystem again");
    let d = Daemon::start_logged(&db, &email_rules(), &args, &dir.path().join("serve2.log"));
    eventually(120, "every acknowledged event applied", || {
        (pending(&c, &d) == 0.0).then_some(())
    });
    let (delivered, repeated) = assert_applied_and_mailed_once(&db, &smtp, &acked, true);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_no_panic(&text);
    d.stop();
    assert_eq!(integrity_check(&db), "ok");
    drop(disk);
    eprintln!(
        "read-only SQLite: {} events acknowledged, {refused} requests refused, {delivered} emails ({repeated} repeated after the failure); integrity ok",
        acked.len()
    );
}

/// Runs statements on the PostgreSQL server as the test's administrator.
fn pg_admin(sql: &[String]) {
    let base = std::env::var("NURTURE_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap();
    let sql = sql.to_vec();
    with_db(&base, async move |pool| {
        for q in &sql {
            sqlx::query(q).execute(pool).await.unwrap();
        }
    })
}

/// A failover leaves the PostgreSQL database read-only: connections are cut
/// and the new ones may read but not write. Requests are refused with 503
/// and the cause, nothing crashes, and once the database is writable again
/// the daemon carries on by itself with nothing acknowledged lost.
#[test]
fn read_only_postgres_refuses_clearly_and_recovers() {
    let Some(db) = postgres_url("reliability_read_only") else {
        return skip("read_only_postgres", NO_POSTGRES);
    };
    let name = db.rsplit('/').next().unwrap().to_string();
    let cut = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    );
    let smtp = SmtpServer::start();
    let url = smtp.url();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let args = ["--smtp-url", url.as_str(), "--secret", "read-only"];
    let mut d =
        Daemon::start_logged_env(&db, &email_rules(), &args, &[("NURTURE_LOG", "info")], &log);
    let c = client();
    let load = Load::start(&d.base, "p");
    eventually(60, "some events acknowledged", || {
        (load.acked() >= 200).then_some(())
    });

    // Failover: every session cut, and the database the daemon reconnects
    // to takes no writes.
    pg_admin(&[
        format!("ALTER DATABASE {name} SET default_transaction_read_only = on"),
        cut.clone(),
    ]);
    let body = refused_for(&load, 0, "read-only transaction");
    eprintln!("read-only: {body}");
    eventually(30, "/healthz to report the read-only database", || {
        let (s, h) = healthz(&c, &d);
        (s == StatusCode::SERVICE_UNAVAILABLE && h["error"].as_str()?.contains("read-only"))
            .then_some(())
    });
    // It goes on meeting the fault (three more failed writes) and stays up.
    failing_on(&c, &d, 3);
    alive(&mut d);
    let at_read_only = load.acked();

    // Writable again (the new primary), sessions cut once more.
    pg_admin(&[
        format!("ALTER DATABASE {name} RESET default_transaction_read_only"),
        cut,
    ]);
    let (acked, refused, delivered, repeated) = recovered(
        load,
        at_read_only,
        &c,
        &d,
        &db,
        &smtp,
        &log,
        "read-only transaction",
    );
    d.stop();
    eprintln!(
        "read-only PostgreSQL: {} events acknowledged, {refused} requests refused, {delivered} emails ({repeated} repeated); recovered without a restart",
        acked.len()
    );
}

// ---------------------------------------------------------------------------
// Rules reloaded under load, broken versions among them.

/// Version `k` of the scoring file: every event scores `k` points by rule
/// `v{k}`, so each ledger entry tells which version applied its event.
fn scoring(k: i64) -> String {
    format!("# version {k}\nscoring:\n  - {{ name: v{k}, on: '*', points: {k} }}\n")
}

const EMAIL: &str = "templates:
  - { name: hello, subject: Hello, text: 'Hi {{ lead.id }}' }
campaigns:
  - name: never
    enroll: 'lead.score < 0'
    steps:
      - { after: 1d, template: hello }
";

/// Writes a file whole (a reader sees the old content or the new one).
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn hup(d: &Daemon) {
    let pid = d.child.id().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
}

fn metrics_text(c: &Client, d: &Daemon) -> String {
    c.get(d.url("/metrics")).send().unwrap().text().unwrap()
}

/// Whether `text` has `file:LINE:COL:` (a diagnostic that points somewhere).
fn has_position(text: &str, file: &str) -> bool {
    text.match_indices(&format!("{file}:")).any(|(i, m)| {
        let rest = &text[i + m.len()..];
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().unwrap_or("");
        let col = parts.next().unwrap_or("");
        !line.is_empty()
            && !col.is_empty()
            && line.chars().all(|c| c.is_ascii_digit())
            && col.chars().all(|c| c.is_ascii_digit())
            && parts.next().is_some()
    })
}

#[test]
fn broken_rules_under_load_keep_the_last_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    for (n, db) in backends("reliability_rules_reload", dir.path())
        .into_iter()
        .enumerate()
    {
        rules_reload(&db, &dir.path().join(format!("run{n}")));
    }
}

/// A ledger entry: the event, its points, the rule.
type Scored = (String, i64, String, i64);

fn rules_reload(db: &str, dir: &Path) {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let (score_file, email_file) = (rules.join("scoring.yaml"), rules.join("email.yaml"));
    std::fs::write(&score_file, scoring(1)).unwrap();
    std::fs::write(&email_file, EMAIL).unwrap();
    let log = dir.join("serve.log");
    let d = Daemon::start_logged(db, &rules, &[], &log);
    let c = client();

    // Steady clients: batches of page views over 40 leads. Each event is
    // kept with the newest version already seen in force when it was sent:
    // it must be applied by that version or a later one.
    let floor = Arc::new(AtomicI64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let clients: Vec<_> = (0..2)
        .map(|w| {
            let (floor, stop, acked, failed) =
                (floor.clone(), stop.clone(), acked.clone(), failed.clone());
            let base = d.base.clone();
            std::thread::spawn(move || {
                let c = client();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let at_least = floor.load(Ordering::SeqCst);
                    let ids: Vec<String> = (i..i + 10).map(|k| format!("w{w}-{k}")).collect();
                    i += 10;
                    let batch: Vec<Value> = ids
                        .iter()
                        .enumerate()
                        .map(|(k, id)| json!({"id": id, "lead": format!("l{}", k * 4 + w), "type": "page_viewed"}))
                        .collect();
                    match c.post(format!("{base}/v1/events")).json(&json!({"batch": batch})).send() {
                        Ok(r) if r.status() == StatusCode::ACCEPTED => acked
                            .lock()
                            .unwrap()
                            .extend(ids.into_iter().map(|id| (id, at_least))),
                        Ok(r) => failed
                            .lock()
                            .unwrap()
                            .push(format!("{}: {}", r.status(), r.text().unwrap_or_default())),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();

    // A probe event: the points it scored once applied.
    let mut probes = 0;
    let mut probe = |c: &Client| -> i64 {
        probes += 1;
        let id = format!("probe-{probes}");
        let (s, _) = post(
            c,
            &d.url("/v1/events"),
            &json!({"id": id, "lead": "probe", "type": "page_viewed"}),
        );
        assert_eq!(s, StatusCode::ACCEPTED);
        eventually(30, &format!("{id} applied"), || {
            let l = lead(c, &d, "probe")?;
            l["ledger"]
                .as_array()?
                .iter()
                .find(|e| e["event"] == json!(id))
                .and_then(|e| e["points"].as_i64())
        })
    };
    assert_eq!(probe(&c), 1);

    // Broken versions: what they break, which file, the text. Each would
    // score 99 points if it were ever taken.
    let half = scoring(99);
    let truncated = &half[..half.find("on:").unwrap() + 2];
    let broken_email_scoring = "scoring:\n  - { name: x99, on: '*', points: 99 }\n";
    let steps: Vec<(&str, &Path, String)> = vec![
        ("valid", &score_file, scoring(2)),
        (
            "a YAML syntax error",
            &score_file,
            "scoring:\n  - { name: v99, on: '*', points: 99\n  - { name: w, on: x, points: 1 }\n"
                .into(),
        ),
        (
            "an unknown field",
            &score_file,
            "scoring:\n  - { name: v99, on: '*', pionts: 99 }\n".into(),
        ),
        ("valid", &score_file, scoring(3)),
        (
            "a CEL expression that does not parse",
            &email_file,
            format!(
                "{broken_email_scoring}{}",
                EMAIL.replace("'lead.score < 0'", "'lead.score < (0'")
            ),
        ),
        (
            "a missing template",
            &email_file,
            format!(
                "{broken_email_scoring}{}",
                EMAIL.replace("template: hello", "template: goodbye")
            ),
        ),
        ("valid", &email_file, EMAIL.to_string()),
        ("valid", &score_file, scoring(4)),
        (
            "a file cut off mid-write",
            &score_file,
            truncated.to_string(),
        ),
        ("valid", &score_file, scoring(5)),
    ];
    let mut version = 1;
    let mut rejections = 0;
    for (what, file, text) in &steps {
        let t = metrics_text(&c, &d);
        let rejected = metric(&t, "nurture_rules_rejected_total");
        let log_len = std::fs::metadata(&log).unwrap().len() as usize;
        replace_file(file, text);
        hup(&d);
        if *what == "valid" {
            if let Some(k) = text.strip_prefix("# version ") {
                let k: i64 = k.split('\n').next().unwrap().parse().unwrap();
                // The new version is in force once a probe scores by it.
                eventually(30, &format!("version {k} in force"), || {
                    let p = probe(&c);
                    assert!(
                        p == version || p == k,
                        "probe scored {p} (in force: {version}, new: {k})"
                    );
                    (p == k).then_some(())
                });
                version = k;
                floor.store(k, Ordering::SeqCst);
                let (_, h) = healthz(&c, &d);
                assert!(h.get("rules_rejected").is_none(), "{h}");
            } else {
                // The e-mail file back as it was: still the same scoring.
                assert_eq!(probe(&c), version);
            }
            continue;
        }
        rejections += 1;
        eventually(30, &format!("{what} rejected"), || {
            let t = metrics_text(&c, &d);
            (metric(&t, "nurture_rules_rejected_total") > rejected).then_some(())
        });
        let name = file.file_name().unwrap().to_str().unwrap();
        let logged = eventually(10, &format!("{what} logged with file:line:col"), || {
            let text = std::fs::read_to_string(&log).ok()?;
            let new = text.get(log_len..)?.to_string();
            has_position(&new, name).then_some(new)
        });
        assert!(logged.contains("ERROR"), "{logged}");
        // /healthz stays ok and says why the change did not apply.
        let (s, h) = healthz(&c, &d);
        assert_eq!(s, StatusCode::OK, "{h}");
        let why = h["rules_rejected"].as_str().unwrap_or_default();
        assert!(has_position(why, name), "after {what}: {h}");
        // The last good rules keep running.
        assert_eq!(probe(&c), version, "after {what}");
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "requests failed during reloads: {failed:?}"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 200, "the load ran ({} events)", acked.len());
    eventually(60, "every acknowledged event applied", || {
        (pending(&c, &d) == 0.0).then_some(())
    });

    // Each acknowledged event applied once, by one valid version no older
    // than the one in force when it was sent; versions only move forward.
    let (applied, scored): (BTreeMap<String, i64>, Vec<Scored>) = with_db(db, async |pool| {
        use sqlx::Row;
        // Every application of an event scores it once (a rule on '*'): its
        // ledger rows, in the order the events were applied: arrival order
        // within each partition (partitions go side by side).
        let scored: Vec<Scored> = sqlx::query(
            "SELECT l.event, l.points, l.rule, e.part FROM ledger l JOIN events e ON e.id = l.event \
             ORDER BY e.part, e.seq, l.n",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<String, _>(0),
                r.get::<i64, _>(1),
                r.get::<String, _>(2),
                r.get::<i64, _>(3),
            )
        })
        .collect();
        let mut applied = BTreeMap::new();
        for (event, _, _, _) in &scored {
            *applied.entry(event.clone()).or_insert(0) += 1;
        }
        (applied, scored)
    });
    let mut by_event: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let (mut last, mut part) = (0, -1);
    for (event, points, rule, p) in &scored {
        if *p != part {
            (last, part) = (0, *p);
        }
        assert_eq!(rule, &format!("v{points}"), "{event} scored by {rule}");
        assert!(
            (1..=5).contains(points),
            "{event} scored by a broken version"
        );
        assert!(*points >= last, "{event}: version {points} after {last}");
        last = *points;
        by_event.entry(event).or_default().push(*points);
    }
    for (id, at_least) in &acked {
        assert_eq!(
            applied.get(id),
            Some(&1),
            "{id} applied {:?} times",
            applied.get(id)
        );
        let points = by_event.get(id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(points.len(), 1, "{id} scored {points:?}");
        assert!(
            points[0] >= *at_least,
            "{id} sent with version {at_least} in force, scored by version {}",
            points[0]
        );
    }
    let t = metrics_text(&c, &d);
    assert!(metric(&t, "nurture_rules_rejected_total") >= rejections as f64);
    eprintln!(
        "{db}: {} events over {} rules versions ({rejections} broken, all rejected), applied once each; no request failed",
        acked.len(),
        steps.len() + 1
    );
    d.stop();
}
