//! Email delivery end to end: the real daemon sends to a real SMTP server
//! (tests/support/smtp.rs) and the tests read what arrived, byte for byte.

use crate::support::smtp::{Received, SmtpServer};
use crate::support::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn rules() -> PathBuf {
    repo().join("tests/fixtures/email-rules")
}

fn identify(id: &str, email: &str, consent: &str) -> Value {
    json!({"id": format!("{id}-identify"), "lead": id, "type": "identify",
           "traits": {"email": email, "consent": consent, "first_name": "Ann"}})
}

fn wait_for_messages(smtp: &SmtpServer, n: usize, secs: u64) -> Vec<Received> {
    eventually(secs, &format!("{n} messages at the SMTP server"), || {
        let m = smtp.messages();
        (m.len() >= n).then_some(m)
    })
}

fn timeline_kinds(c: &reqwest::blocking::Client, d: &Daemon, lead: &str) -> Vec<Value> {
    let (_, t) = get(c, &d.url(&format!("/v1/leads/{lead}/timeline")));
    t["entries"].as_array().cloned().unwrap_or_default()
}

#[test]
fn drips_and_owner_notices_arrive_with_headers_multipart_and_a_working_unsubscribe() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends("email_end_to_end", dir.path()) {
        let smtp = SmtpServer::start();
        let d = Daemon::start_args(&db, &rules(), None, &["--smtp-url", &smtp.url()]);
        let c = client();
        let (s, _) = post(
            &c,
            &d.url("/v1/events"),
            &identify("u1", "ann@leads.example", "opted_in"),
        );
        assert_eq!(s, StatusCode::ACCEPTED);
        let m = wait_for_messages(&smtp, 1, 20).remove(0);

        // Envelope and headers.
        assert_eq!(m.to, vec!["ann@leads.example".to_string()]);
        assert!(m.from.contains("hello@acme.example"), "{}", m.from);
        assert_eq!(m.header("Subject").as_deref(), Some("Welcome, Ann"));
        assert_eq!(
            m.header("From").as_deref(),
            Some("Acme <hello@acme.example>")
        );
        let message_id = m.header("Message-ID").expect("a Message-ID");
        assert!(message_id.ends_with("@acme.example>"), "{message_id}");
        assert_eq!(
            m.header("List-Unsubscribe-Post").as_deref(),
            Some("List-Unsubscribe=One-Click")
        );
        let list = m.header("List-Unsubscribe").expect("List-Unsubscribe");
        let links: Vec<&str> = list
            .split(',')
            .map(|l| l.trim().trim_start_matches('<').trim_end_matches('>'))
            .collect();
        assert_eq!(links.len(), 2, "{list}");
        let url = links[0];
        assert!(
            url.starts_with(&format!("{}/unsubscribe/", d.base)),
            "{url}"
        );
        assert!(links[1].starts_with("mailto:hello@acme.example?subject=unsubscribe%20"));
        // Text and HTML alternatives; the link is in the body too.
        let ct = m.header("Content-Type").unwrap();
        assert!(ct.starts_with("multipart/alternative"), "{ct}");
        assert!(m.data.contains("text/plain"));
        assert!(m.data.contains("text/html"));
        assert!(m.data.contains(url), "the body carries the same link");

        // The timeline names the message that was sent.
        let entries = eventually(10, "email_sent on the timeline", || {
            let t = timeline_kinds(&c, &d, "u1");
            t.iter().any(|e| e["kind"] == "email_sent").then_some(t)
        });
        let sent = entries.iter().find(|e| e["kind"] == "email_sent").unwrap();
        assert_eq!(sent["detail"]["message_id"], json!(message_id));

        // A forged or altered token: 400, and nothing changes.
        let token = url.rsplit('/').next().unwrap();
        let (body, sig) = token.split_once('.').unwrap();
        let forged = format!("{}.{sig}", base64_url(b"someone-else"));
        let mut altered = token.to_string();
        altered.pop();
        altered.push(if token.ends_with('A') { 'B' } else { 'A' });
        for bad in [forged, altered, format!("{body}.")] {
            let r = c
                .post(d.url(&format!("/unsubscribe/{bad}")))
                .send()
                .unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
            let r = c.get(d.url(&format!("/unsubscribe/{bad}"))).send().unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST);
            // A page for the person who clicked, not the API's JSON error.
            assert!(r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"));
            assert!(r.text().unwrap().contains("Invalid link"));
        }
        assert_eq!(lead(&c, &d, "u1").unwrap()["consent"], "opted_in");

        // GET shows a confirmation page and changes nothing (scanners follow links).
        let r = c.get(url).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let page = r.text().unwrap();
        assert!(page.contains("<form method=\"post\""), "{page}");
        assert_eq!(lead(&c, &d, "u1").unwrap()["consent"], "opted_in");

        // One-click POST as a mail client sends it (RFC 8058).
        let r = c
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        eventually(10, "consent opted_out", || {
            (lead(&c, &d, "u1").unwrap()["consent"] == "opted_out").then_some(())
        });
        let l = lead(&c, &d, "u1").unwrap();
        let e = &l["enrollments"][0];
        assert_eq!(e["status"], "exited", "{l}");
        let t = timeline_kinds(&c, &d, "u1");
        assert!(
            t.iter()
                .any(|e| e["kind"] == "event" && e["detail"]["type"] == "unsubscribed"),
            "{t:?}"
        );

        // An SQL is routed: its owner gets a notice without unsubscribe headers.
        post(
            &c,
            &d.url("/v1/events"),
            &identify("u2", "bob@leads.example", "opted_in"),
        );
        post(
            &c,
            &d.url("/v1/events"),
            &json!({"id": "u2-demo", "lead": "u2", "type": "demo_requested"}),
        );
        let all = eventually(20, "the owner's notice", || {
            let m = smtp.messages();
            m.iter()
                .any(|m| m.to == vec!["anna@sales.example".to_string()])
                .then_some(m)
        });
        let notice = all
            .iter()
            .find(|m| m.to == vec!["anna@sales.example".to_string()])
            .unwrap();
        assert!(notice.header("List-Unsubscribe").is_none());
        assert!(notice.data.contains("u2"), "{}", notice.data);
        assert!(
            notice.data.contains("demo"),
            "score breakdown: {}",
            notice.data
        );
        d.stop();
    }
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[test]
fn leads_without_consent_get_no_marketing_email() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let smtp = SmtpServer::start();
    let d = Daemon::start_args(&db, &rules(), None, &["--smtp-url", &smtp.url()]);
    let c = client();
    let batch = json!({"batch": [
        identify("unknown", "unknown@leads.example", "unknown"),
        identify("out", "out@leads.example", "opted_out"),
        identify("in", "in@leads.example", "opted_in"),
    ]});
    let (s, _) = post(&c, &d.url("/v1/events"), &batch);
    assert_eq!(s, StatusCode::ACCEPTED);
    wait_for_messages(&smtp, 1, 20);
    // Everything these events decided is applied and out: nothing follows.
    settled(&c, &d, 20, false);
    let to: Vec<Vec<String>> = smtp.messages().into_iter().map(|m| m.to).collect();
    assert_eq!(to, vec![vec!["in@leads.example".to_string()]]);
    let unknown = timeline_kinds(&c, &d, "unknown");
    assert!(
        unknown
            .iter()
            .any(|e| e["detail"]["note"] == "step_postponed" && e["detail"]["reason"] == "consent"),
        "{unknown:?}"
    );
}

#[test]
fn sends_wait_while_the_smtp_server_is_down_and_each_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends("email_outage", dir.path()) {
        // A port with nothing listening yet.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("smtp://127.0.0.1:{port}");
        let d = Daemon::start_args(&db, &rules(), None, &["--smtp-url", &url]);
        let c = client();
        let n = 20;
        let batch: Vec<Value> = (0..n)
            .map(|i| identify(&format!("l{i}"), &format!("l{i}@leads.example"), "opted_in"))
            .collect();
        post(&c, &d.url("/v1/events"), &json!({ "batch": batch }));
        // Every send failed at least once and waits for its retry.
        eventually(20, "failed tries", || {
            let m = c.get(d.url("/metrics")).send().unwrap().text().unwrap();
            (metric(&m, "nurture_emails_retried_total") >= n as f64).then_some(())
        });
        let smtp = SmtpServer::start_on(port);
        let got = wait_for_messages(&smtp, n, 30);
        // Retries are due at different moments: once the outbox has nothing
        // pending, nothing more can come, and nothing may have come twice.
        settled(&c, &d, 30, false);
        let got = smtp.messages().len().max(got.len());
        assert_eq!(got, n, "each email exactly once");
        let ids: BTreeSet<String> = smtp
            .messages()
            .iter()
            .map(|m| m.header("Message-ID").unwrap())
            .collect();
        assert_eq!(ids.len(), n);
        d.stop();
    }
}

/// After a long outage, mail waits on backoffs of up to 10 minutes; once
/// the server is back, a probe finds it and everything waiting goes at once.
#[test]
fn mail_waiting_on_a_long_backoff_goes_as_soon_as_the_server_is_back() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends("email_backoff_reset", dir.path()) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("smtp://127.0.0.1:{port}");
        let d = Daemon::start_args(&db, &rules(), None, &["--smtp-url", &url]);
        let c = client();
        let n = 10;
        let batch: Vec<Value> = (0..n)
            .map(|i| identify(&format!("b{i}"), &format!("b{i}@leads.example"), "opted_in"))
            .collect();
        post(&c, &d.url("/v1/events"), &json!({ "batch": batch }));
        eventually(20, "failed tries", || {
            let m = c.get(d.url("/metrics")).send().unwrap().text().unwrap();
            (metric(&m, "nurture_emails_retried_total") >= n as f64).then_some(())
        });
        // As after half an hour down: each waits ten minutes for its next try.
        let later = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            + 600_000;
        eventually(20, "every email waiting on a long backoff", || {
            db_exec(
                &db,
                &format!(
                    "UPDATE outbox SET next_at = {later}, attempts = 10 \
                     WHERE state = 'pending' AND last_error IS NOT NULL"
                ),
            );
            let waiting = outbox(&db, "email")
                .iter()
                .filter(|r| r.state == "pending" && r.attempts == 10)
                .count();
            (waiting == n).then_some(())
        });
        let smtp = SmtpServer::start_on(port);
        // Well inside the ten minutes: the probes (every 10 s at most) find it.
        let got = wait_for_messages(&smtp, n, 60);
        assert_eq!(got.len(), n);
        settled(&c, &d, 30, false);
        assert_eq!(smtp.messages().len(), n, "each email once");
        d.stop();
    }
}

#[test]
fn a_hard_bounce_fails_the_send_and_suppresses_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let smtp = SmtpServer::start();
    let d = Daemon::start_args(&db, &rules(), None, &["--smtp-url", &smtp.url()]);
    let c = client();
    post(
        &c,
        &d.url("/v1/events"),
        &identify("b", "bounce@leads.example", "opted_in"),
    );
    let l = eventually(20, "the bounce applied", || {
        let l = lead(&c, &d, "b")?;
        (l["enrollments"][0]["status"] == "exited").then_some(l)
    });
    assert_eq!(l["undeliverable"], true, "{l}");
    let t = timeline_kinds(&c, &d, "b");
    let failed = t
        .iter()
        .find(|e| e["kind"] == "email_failed")
        .expect("email_failed");
    assert_eq!(failed["detail"]["bounce"], true);
    assert!(t
        .iter()
        .any(|e| e["kind"] == "event" && e["detail"]["type"] == "email_bounced"));
    assert!(smtp.messages().is_empty());
}

/// kill -9 in the middle of a burst of sends, restart: every step arrives, no step
/// becomes two different messages, and a message is repeated only where a
/// crash left its outcome unknown (then with the same Message-ID).
#[test]
fn kill_during_a_burst_of_sends_loses_none_and_sends_no_step_twice() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends("email_crash", dir.path()) {
        let smtp = SmtpServer::start();
        let url = smtp.url();
        let args = ["--smtp-url", url.as_str(), "--secret", "s3cret"];
        let d = Daemon::start_args(&db, &rules(), None, &args);
        let c = client();
        let n = 1000;
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let batch: Vec<Value> = chunk
                .iter()
                .map(|i| identify(&format!("k{i}"), &format!("k{i}@leads.example"), "opted_in"))
                .collect();
            post(&c, &d.url("/v1/events"), &json!({ "batch": batch }));
        }
        // Kill in the middle of the burst.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while smtp.messages().len() < 100 {
            assert!(
                std::time::Instant::now() < deadline,
                "the burst never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        d.kill9();
        let before = smtp.messages().len();
        let d = Daemon::start_args(&db, &rules(), None, &args);
        let got = eventually(60, "every step delivered", || {
            let m = smtp.messages();
            let ids: BTreeSet<String> = m.iter().filter_map(|m| m.header("Message-ID")).collect();
            (ids.len() >= n).then_some(m)
        });
        let metrics = c.get(d.url("/metrics")).send().unwrap().text().unwrap();
        let resent = metric(&metrics, "nurture_emails_resent_total");
        let mut per_lead: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for m in &got {
            per_lead
                .entry(m.to[0].clone())
                .or_default()
                .insert(m.header("Message-ID").unwrap());
        }
        assert_eq!(per_lead.len(), n, "every lead got its step");
        assert!(
            per_lead.values().all(|ids| ids.len() == 1),
            "a step became two different messages"
        );
        let repeats = got.len() - n;
        eprintln!(
            "{db}: {before} delivered before the kill; {repeats} repeated after it, {resent} resent as uncertain"
        );
        assert!(
            repeats as f64 <= resent,
            "{repeats} messages arrived twice but only {resent} were uncertain"
        );
        d.stop();
    }
}

#[test]
fn smtp_credentials_from_the_url_are_used_and_a_wrong_password_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let smtp = SmtpServer::start_with_login("nurture@acme.example", "p@ss:word");
    // Credentials are URL-encoded in the SMTP URL.
    let wrong = format!("smtp://nurture%40acme.example:nope@{}", smtp.addr);
    let d = Daemon::start_args(&db, &rules(), None, &["--smtp-url", &wrong]);
    let c = client();
    post(
        &c,
        &d.url("/v1/events"),
        &identify("a", "a@leads.example", "opted_in"),
    );
    eventually(20, "a refused login, retried", || {
        let m = c.get(d.url("/metrics")).send().unwrap().text().unwrap();
        (metric(&m, "nurture_emails_retried_total") >= 1.0).then_some(())
    });
    assert!(smtp.messages().is_empty());
    d.stop();
    // The right password: the waiting message goes out.
    let right = format!("smtp://nurture%40acme.example:p%40ss%3Aword@{}", smtp.addr);
    let d = Daemon::start_args(&db, &rules(), None, &["--smtp-url", &right]);
    let got = wait_for_messages(&smtp, 1, 30);
    assert_eq!(got[0].to, vec!["a@leads.example".to_string()]);
    d.stop();
}
