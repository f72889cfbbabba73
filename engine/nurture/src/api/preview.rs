//! `POST /v1/rules/preview`: what a candidate rules directory would change,
//! on the history this daemon stored: the report of `nurture replay`, made
//! in the background while the daemon goes on serving (one preview at a
//! time, on a thread of its own), read with `GET /v1/rules/preview/{id}`
//! and cancelled with `DELETE`. The candidate is a directory the daemon may
//! read: under the parent of its own rules directory, no further.

use super::{ApiError, AppState};
use crate::model::time;
use crate::rules::Ruleset;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Finished previews kept to be read (the oldest goes first).
const KEPT: usize = 8;

/// The previews of this daemon.
pub struct Previews {
    /// Candidates must lie under this directory.
    root: PathBuf,
    jobs: Mutex<BTreeMap<u64, Job>>,
    next: AtomicU64,
}

struct Job {
    cancel: Arc<AtomicBool>,
    state: Value,
}

impl Previews {
    pub fn new(root: PathBuf) -> Previews {
        Previews {
            root,
            jobs: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Job>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, id: u64, state: Value) {
        if let Some(job) = self.jobs().get_mut(&id) {
            job.state = state;
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PreviewRequest)]
pub struct Request {
    /// The candidate rules directory, absolute or relative to the root.
    path: String,
    /// Due work up to here (default: now).
    #[serde(default)]
    until: Option<String>,
    /// Differing leads in the answer (default 100).
    #[serde(default)]
    limit: Option<usize>,
}

/// Starts a preview: 202 `{"id", "state": "running"}`; 400 for a candidate
/// that does not load (its errors as `file:line:col: message`), 403 for a
/// path outside the root, 409 while another runs.
#[utoipa::path(post, path = "/rules/preview", tag = "rules", operation_id = "start_preview",
    request_body = Request,
    responses(
        (status = 202, description = "Started: read it with GET /v1/rules/preview/{id}.", body = PreviewState),
        (status = 400, description = "The candidate does not load, or a bad field.", body = super::doc::ErrorBody),
        (status = 403, description = "A path outside the preview root.", body = super::doc::ErrorBody),
        (status = 409, description = "Another preview is running.", body = super::doc::ErrorBody),
        (status = 415, description = "Not JSON.", body = super::doc::ErrorBody),
        (status = 422, description = "A body of the wrong shape.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = [])))]
pub async fn start(
    State(s): State<AppState>,
    Json(req): Json<Request>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let previews = s.previews.clone();
    let dir = candidate_dir(&previews.root, &req.path)?;
    let until = match req.until.as_deref().map(time::parse_time_or_date) {
        None => s.clock.now(),
        Some(Ok(t)) => t,
        Some(Err(_)) => return Err(ApiError::bad("until", "not a date or an RFC 3339 time")),
    };
    let limit = req.limit.unwrap_or(100);
    let cand = Ruleset::load(&dir).map_err(|d| {
        let errors: Vec<String> = d.0.iter().map(|d| d.to_string()).collect();
        ApiError::bad(
            "path",
            format!("the candidate rules have errors: {}", errors.join("; ")),
        )
    })?;
    let cancel = Arc::new(AtomicBool::new(false));
    let id = {
        let mut jobs = previews.jobs();
        if jobs.values().any(|j| j.state["state"] == "running") {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "a preview is running: wait for it, or cancel it with DELETE /v1/rules/preview/{id}",
            ));
        }
        while jobs.len() >= KEPT {
            jobs.pop_first();
        }
        let id = previews.next.fetch_add(1, Ordering::Relaxed);
        jobs.insert(
            id,
            Job {
                cancel: cancel.clone(),
                state: json!({"id": id, "state": "running", "path": dir.display().to_string()}),
            },
        );
        id
    };
    let store = s.store.clone();
    let active = s.rules.current();
    tokio::spawn(async move {
        let none = HashSet::new();
        let state = match store.stored_history(None, until, &none, &mut |_| {}).await {
            Err(e) => json!({"id": id, "state": "failed", "error": e.cause()}),
            Ok(history) => {
                let cancelled = cancel.clone();
                let report = tokio::task::spawn_blocking(move || {
                    let host = if cand.plugins.is_empty() {
                        None
                    } else {
                        let opts = crate::plugins::Options::default();
                        Some(
                            crate::plugins::Host::new(&cand.plugins, opts)
                                .map_err(|e| e.to_string())?,
                        )
                    };
                    let base = active.evaluator();
                    let candidate = match &host {
                        Some(h) => crate::eval::Evaluator::with_plugins(&cand, h),
                        None => crate::eval::Evaluator::new(&cand),
                    };
                    Ok::<_, String>(
                        crate::sim::compare::run_both(
                            base,
                            candidate,
                            &history.events,
                            Some(until),
                            &cancelled,
                        )
                        .map(|r| (r, history.erased)),
                    )
                })
                .await;
                match report {
                    Ok(Ok(Some((mut r, erased)))) => {
                        r.leads.truncate(limit);
                        json!({"id": id, "state": "done", "erased_leads": erased,
                               "summary": r.summary, "leads": r.leads})
                    }
                    Ok(Ok(None)) => json!({"id": id, "state": "cancelled"}),
                    Ok(Err(e)) => json!({"id": id, "state": "failed", "error": e}),
                    Err(e) => json!({"id": id, "state": "failed", "error": e.to_string()}),
                }
            }
        };
        previews.set(id, state);
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "state": "running"})),
    ))
}

/// A preview as it stands (`state`: running, done, cancelled, failed).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // The handler keeps the state as JSON; here for the document.
pub struct PreviewState {
    id: u64,
    /// running, done, cancelled or failed.
    state: String,
    path: Option<String>,
    error: Option<String>,
    erased_leads: Option<u64>,
    #[schema(value_type = Option<Object>)]
    summary: Option<Value>,
    #[schema(value_type = Option<Vec<Object>>)]
    leads: Option<Vec<Value>>,
}

/// A preview as it stands: running, done (with the report), cancelled or failed.
#[utoipa::path(get, path = "/rules/preview/{id}", tag = "rules", operation_id = "get_preview",
    params(("id" = u64, Path, description = "The preview's id.")),
    responses(
        (status = 200, description = "The preview.", body = PreviewState),
        (status = 404, description = "No such preview.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = [])))]
pub async fn get(State(s): State<AppState>, Path(id): Path<u64>) -> Result<Json<Value>, ApiError> {
    s.previews
        .jobs()
        .get(&id)
        .map(|j| Json(j.state.clone()))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no preview {id}")))
}

/// Cancels a running preview (it stops within a few thousand events).
#[utoipa::path(delete, path = "/rules/preview/{id}", tag = "rules", operation_id = "cancel_preview",
    params(("id" = u64, Path, description = "The preview's id.")),
    responses(
        (status = 202, description = "Cancelling."),
        (status = 404, description = "No such preview.", body = super::doc::ErrorBody),
    ),
    security(("api_token" = [])))]
pub async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    match s.previews.jobs().get(&id) {
        Some(j) => {
            j.cancel.store(true, Ordering::Relaxed);
            Ok(StatusCode::ACCEPTED)
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no preview {id}"),
        )),
    }
}

/// The candidate directory, which must lie under `root` (no `..` out of it,
/// no link out of it: both are resolved first).
fn candidate_dir(root: &std::path::Path, path: &str) -> Result<PathBuf, ApiError> {
    let root = root.canonicalize().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("preview root: {e}"),
        )
    })?;
    let dir = root.join(path).canonicalize().map_err(|_| {
        ApiError::bad(
            "path",
            format!("no directory {path:?} under the preview root"),
        )
    })?;
    if !dir.starts_with(&root) || !dir.is_dir() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{path:?} is not a directory under the preview root {}",
                root.display()
            ),
        ));
    }
    Ok(dir)
}
