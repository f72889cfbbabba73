//! The OpenAPI 3.1 document of the API: the types of bodies that handlers
//! read or answer as free JSON (events, Segment calls, a lead's detail,
//! health), and [`finish`], which adds what every operation shares (the
//! JSON error on any 4xx, 429 with `Retry-After` and 401 where a credential
//! is needed, 503 where the database answers) and the security schemes.
//! The paths themselves come from the handlers' `#[utoipa::path]`, put in
//! the router and the document by the same `routes!` call (`api::routes`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

/// Every error: `{"error": {"message", "field"?, "index"?}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    #[schema(inline)]
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What is wrong, for a person.
    pub message: String,
    /// The field (of the body, a header or a query parameter) at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The item of a batch at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// Events stored: new ones, and those already stored under the same id.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub accepted: u64,
    pub duplicates: u64,
}

/// One event (SPEC section 3). Unknown fields are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read by the core from the raw body; here for the document.
pub struct EventIn {
    /// Unique per event: a retry with the same id is a duplicate.
    #[schema(min_length = 1, max_length = 1024)]
    id: String,
    /// The lead's id.
    #[schema(min_length = 1, max_length = 1024)]
    lead: String,
    /// The event type the rules match on.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 1024)]
    kind: String,
    /// When it happened (RFC 3339; default: when it arrives).
    #[schema(format = DateTime)]
    at: Option<String>,
    #[schema(value_type = Option<Object>)]
    properties: Option<Value>,
    /// The lead's attributes (`email`, `consent`, ...).
    #[schema(value_type = Option<Object>)]
    traits: Option<Value>,
}

/// Up to 1,000 events, all checked before any is stored.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EventBatch {
    batch: Vec<EventIn>,
}

/// `POST /v1/events`: one event or a batch.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EventsBody {
    One(Box<EventIn>),
    Batch(EventBatch),
}

/// A Segment call (`identify`, `track`, `page`): Segment's own fields, of
/// which Nurture reads these (docs/daemon.md, Segment).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
pub struct SegmentCall {
    user_id: Option<String>,
    anonymous_id: Option<String>,
    /// The event name (`track`).
    event: Option<String>,
    /// The page name (`page`).
    name: Option<String>,
    message_id: Option<String>,
    #[schema(format = DateTime)]
    timestamp: Option<String>,
    #[schema(value_type = Option<Object>)]
    traits: Option<Value>,
    #[schema(value_type = Option<Object>)]
    properties: Option<Value>,
    /// The write key, as analytics.js sends it from a browser.
    write_key: Option<String>,
}

/// Segment's batch: calls each with its `type`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
pub struct SegmentBatch {
    #[schema(value_type = Vec<Object>)]
    batch: Vec<Value>,
    write_key: Option<String>,
}

/// A lead as the API shows it: the `simulate` line (SPEC section 4) and
/// what explains it.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct LeadDetail {
    lead: String,
    stage: String,
    score: i64,
    fit: i64,
    owner: Option<String>,
    consent: String,
    email: Option<String>,
    #[schema(value_type = Object)]
    attributes: Value,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    last_activity_at: String,
    #[schema(value_type = Vec<Object>)]
    ledger: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    transitions: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    emails: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    assignments: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    score_breakdown: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    fit_breakdown: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    enrollments: Vec<Value>,
    undeliverable: bool,
}

/// The funnel per stage, and per owner: assignments, feedback, SLA breaches.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct FunnelReport {
    leads: i64,
    #[schema(value_type = Vec<Object>)]
    stages: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    owners: Vec<Value>,
}

/// `/healthz`: `ok`, `degraded` (work waits: `degraded` says why) or
/// `unavailable` (503: the database cannot be read or refuses writes).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `ok`, `degraded` or `unavailable`.
    status: String,
    events_pending: Option<i64>,
    due_work: Option<i64>,
    quarantined: Option<i64>,
    outbox_pending: Option<i64>,
    degraded: Option<Vec<String>>,
    error: Option<String>,
    rules_rejected: Option<String>,
}

/// `GET /readyz`: `ready` (200) or `not ready` (503) with the reasons.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Readiness {
    /// `ready` or `not ready`.
    status: String,
    /// Each check's state (database, backlog, processor, mail, rules).
    #[schema(value_type = Object)]
    checks: Value,
    /// One sentence per reason, when not ready.
    reasons: Option<Vec<String>>,
}

/// Adds what every operation shares, and the document's header.
pub fn finish(mut doc: Value) -> Value {
    let error = json!({"$ref": "#/components/schemas/ErrorBody"});
    let json_error = |description: &str| {
        json!({"description": description,
               "content": {"application/json": {"schema": error.clone()}}})
    };
    doc["info"] = json!({
        "title": "Nurture",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Rules-driven marketing automation: events in, leads, reports and \
            routing out (docs/daemon.md). With --api-token, every /v1 route needs a \
            credential: the API token (Bearer), or on the ingest routes a write key \
            (Bearer or Basic user). Without one, the daemon serves loopback only and \
            asks for no credential.",
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    });
    let components = doc["components"].as_object_mut().map(std::mem::take);
    let mut components = components.unwrap_or_default();
    let schemas = components.entry("schemas").or_insert_with(|| json!({}));
    schemas["ErrorBody"] =
        serde_json::to_value(<ErrorBody as utoipa::PartialSchema>::schema()).unwrap_or_default();
    components.insert(
        "securitySchemes".into(),
        json!({
            "api_token": {"type": "http", "scheme": "bearer",
                "description": "The API token (--api-token); on the ingest routes also a write key."},
            "write_key": {"type": "http", "scheme": "basic",
                "description": "A write key as the user name, the password empty (Segment's way)."},
        }),
    );
    doc["components"] = Value::Object(components);
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let mut add = |code: &str, r: Value| {
                responses.entry(code.to_string()).or_insert(r);
            };
            add(
                "4XX",
                json_error("A refused request: what is wrong, and where."),
            );
            if path.starts_with("/v1/") {
                add(
                    "503",
                    json_error("The database is unavailable or refuses writes; retry later."),
                );
            }
            let secured = op
                .get("security")
                .is_some_and(|s| s.as_array().is_some_and(|a| !a.is_empty()));
            if secured {
                let responses = op["responses"].as_object_mut().expect("an object");
                responses
                    .entry("401")
                    .or_insert_with(|| json_error("Missing or wrong credential."));
                let mut too_many = json_error(
                    "Too many failed authentications from this address, or (ingest) over the \
                     request rate of this write key or address.",
                );
                too_many["headers"] = json!({"Retry-After": {
                    "description": "Seconds to wait.", "schema": {"type": "integer"}}});
                responses.entry("429").or_insert(too_many);
            }
        }
    }
    doc
}
