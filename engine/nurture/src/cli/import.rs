//! `nurture import FILE`: history moving in from another tool, posted to a
//! running daemon in `at` order within an import (`POST /v1/imports`, then
//! `POST /v1/events?import=ID` batch by batch, then `DELETE
//! /v1/imports/ID`): due work waits for the history, so the daemon ends
//! where `simulate` would. What that history decides up to the import
//! (last quarter's drip emails, notices, webhooks) is recorded on the
//! timeline as `withheld`, not sent (docs/daemon.md, Importing history).

use crate::model::time;
use crate::sim;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Events per request: the API's batch limit.
const BATCH: usize = 500;
/// A daemon that answers 503 (its database away) is asked again this
/// often, this many times, before the import stops (it can be run again:
/// event ids make it idempotent).
const RETRY: Duration = Duration::from_secs(1);
const TRIES: u32 = 30;

pub fn run(file: &Path, url: &str, token: Option<&str>) -> ExitCode {
    let mut events = match sim::read_events_file(file) {
        Ok(e) => e,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    // Stable: events at one time keep their file order, as in simulate.
    events.sort_by_key(|e| e.at);
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nurture import: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base = url.trim_end_matches('/');
    let result = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        // Opened first: from now on due work waits for the history.
        let opened = send(
            &client,
            reqwest::Method::POST,
            &format!("{base}/v1/imports"),
            token,
            None,
        )
        .await?;
        let id = opened["id"].as_str().unwrap_or_default().to_string();
        let endpoint = format!("{base}/v1/events?import={id}");
        let posted = post_all(&client, &endpoint, token, &events).await;
        // Closed whatever happened, so due work goes on; an import that
        // stopped part way can be run again (event ids keep it once).
        let closed = send(
            &client,
            reqwest::Method::DELETE,
            &format!("{base}/v1/imports/{id}"),
            token,
            None,
        )
        .await;
        let counts = posted?;
        closed?;
        anyhow::Ok(counts)
    });
    match result {
        Ok((accepted, duplicates)) => {
            println!(
                "imported {accepted} events ({duplicates} already there) from {}",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nnurture import: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Posts every batch in order; returns the events accepted and those
/// already there.
async fn post_all(
    client: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
    events: &[crate::model::Event],
) -> anyhow::Result<(u64, u64)> {
    let (mut accepted, mut duplicates) = (0u64, 0u64);
    for (n, chunk) in events.chunks(BATCH).enumerate() {
        let batch: Vec<serde_json::Value> = chunk.iter().map(|e| e.to_json()).collect();
        let body = serde_json::json!({ "batch": batch });
        let answer = send(client, reqwest::Method::POST, endpoint, token, Some(&body)).await?;
        accepted += answer["accepted"].as_u64().unwrap_or(0);
        duplicates += answer["duplicates"].as_u64().unwrap_or(0);
        if let Some(last) = chunk.last() {
            eprint!(
                "\rimported {} of {} events (up to {})",
                n * BATCH + chunk.len(),
                events.len(),
                time::format(&last.at)
            );
        }
    }
    eprintln!();
    Ok((accepted, duplicates))
}

/// One request; a 503 (the daemon's database away) is tried again, any
/// other refusal stops the import with the daemon's message (it names the
/// event and field).
async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut tries = 0;
    loop {
        let mut req = client.request(method.clone(), url);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        let status = res.status();
        let answer: serde_json::Value = res.json().await.unwrap_or_default();
        if status.is_success() {
            return Ok(answer);
        }
        tries += 1;
        if status != reqwest::StatusCode::SERVICE_UNAVAILABLE || tries >= TRIES {
            let error = &answer["error"];
            let why = error["message"].as_str().unwrap_or("no reason given");
            let field = error["field"]
                .as_str()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default();
            anyhow::bail!("{method} {url}: HTTP {status}: {why}{field}");
        }
        tokio::time::sleep(RETRY).await;
    }
}
