//! The API's contract: the OpenAPI 3.1 document (`nurture openapi`, `GET
//! /openapi.json`) names every route the daemon serves and every route the
//! docs name; a validator from PyPI accepts it; and schemathesis, run
//! against a live daemon, finds no 5xx, no answer that breaks the document
//! and no route that answers without its credential.

use crate::support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

const TOKEN: &str = "contract-token";

fn rules() -> PathBuf {
    repo().join("tests/fixtures/daemon-rules")
}

/// `nurture openapi`, parsed.
fn printed_document() -> Value {
    let out = Command::new(BIN).arg("openapi").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nurture openapi prints JSON")
}

/// Every (METHOD, path) of the document, path parameters written `{}`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), unnamed(path)));
        }
    }
    ops
}

/// `/v1/leads/{id}` → `/v1/leads/{}`.
fn unnamed(path: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("{}");
            }
            '}' => inside = false,
            _ if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// A tool from PyPI, or a skip (a failure in CI).
fn tool(name: &str, test: &str) -> bool {
    let found = Command::new(name)
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip(
            test,
            &format!("{name} not installed (pip install, as .ci/run does)"),
        );
    }
    found
}

#[test]
fn every_route_is_in_the_document_and_the_document_is_served() {
    let doc = printed_document();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let ops = operations(&doc);

    // Every route the user docs name is in the document.
    let route = regex_lite_routes();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.push(repo().join("README.md"));
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let page = page.display();
        for (method, path) in route(&text) {
            assert!(
                ops.contains(&(method.clone(), unnamed(&path))),
                "{page} names {method} {path}, which the OpenAPI document lacks"
            );
        }
    }

    // Every documented operation is served: none falls through to the
    // router's "no such route" or answers 405 (the router and the document
    // come from one list, api::groups; this proves each is wired).
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&sqlite_url(dir.path()), &rules(), Some(TOKEN));
    let c = client();
    let served: Value = c
        .get(d.url("/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        served, doc,
        "GET /openapi.json is what nurture openapi prints"
    );
    for (method, path) in &ops {
        let url = d.url(&path.replace("{}", "1"));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = c
            .request(m, &url)
            .bearer_auth(TOKEN)
            .json(&json!({}))
            .send()
            .unwrap();
        let status = r.status();
        let body = r.text().unwrap_or_default();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {body}"
        );
        assert!(
            !body.contains("no such route"),
            "{method} {path} is documented but not served: {status} {body}"
        );
    }

    // Without a credential, every operation the document secures answers 401.
    let mut secured = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["security"].as_array().is_none_or(|s| s.is_empty()) {
                continue;
            }
            secured += 1;
            let url = d.url(&unnamed(path).replace("{}", "1"));
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = c.request(m, &url).json(&json!({})).send().unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            let v: Value = r.json().unwrap();
            assert!(v["error"]["message"].is_string(), "{method} {path}: {v}");
        }
    }
    assert!(secured >= 20, "only {secured} secured operations");
    d.stop();
}

/// `GET /v1/...`-like mentions in prose: (METHOD, path up to a space,
/// backquote, `?` or punctuation).
fn regex_lite_routes() -> impl Fn(&str) -> Vec<(String, String)> {
    |text: &str| {
        let mut found = Vec::new();
        for method in ["GET", "POST", "DELETE", "PUT", "PATCH"] {
            let needle = format!("{method} /");
            let mut rest = text;
            while let Some(at) = rest.find(&needle) {
                let tail = &rest[at + method.len() + 1..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "/{}_-.".contains(c)))
                    .unwrap_or(tail.len());
                let path = tail[..end].trim_end_matches('.');
                if path.len() > 1 {
                    found.push((method.to_string(), path.to_string()));
                }
                rest = &rest[at + needle.len()..];
            }
        }
        found
    }
}

#[test]
fn schemathesis_finds_no_5xx_and_every_answer_matches_the_document() {
    let test = "schemathesis_finds_no_5xx_and_every_answer_matches_the_document";
    if !tool("openapi-spec-validator", test) || !tool("schemathesis", test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&printed_document()).unwrap()).unwrap();
    let out = Command::new("openapi-spec-validator")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    for (n, db) in backends("openapi_schemathesis", dir.path())
        .into_iter()
        .enumerate()
    {
        // Failed authentications are what the auth check sends: not limited here.
        let d = Daemon::start_args(
            &db,
            &rules(),
            Some(TOKEN),
            &["--auth-failures-per-minute", "0"],
        );
        let c = client();
        // Leads to find, feedback and erase.
        let r = c
            .post(d.url("/v1/events"))
            .bearer_auth(TOKEN)
            .json(&json!({"batch": [
                {"id": "e1", "lead": "1", "type": "signup", "traits": {"email": "one@example.com"}},
                {"id": "e2", "lead": "u", "type": "visit"},
            ]}))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let report = dir.path().join(format!("report-{n}"));
        let out = Command::new("schemathesis")
            .arg("run")
            .arg(d.url("/openapi.json"))
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,ignored_auth"])
            .args(["--max-examples", "20", "--seed", "19", "--workers", "2"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args(["--request-timeout", "20", "--no-color"])
            .arg("--report-dir")
            .arg(&report)
            .env("SCHEMATHESIS_TELEMETRY", "false")
            // Its example database and reports stay out of the checkout.
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "schemathesis on {db}:\n{text}");
        d.stop();
    }
}
