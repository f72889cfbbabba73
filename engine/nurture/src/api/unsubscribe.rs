//! Public `GET|POST /unsubscribe/{token}` (RFC 8058). GET only shows a page
//! with a button: mail scanners follow links, and must not unsubscribe
//! anyone. POST (the button, or a mail client's one-click request) records an
//! `unsubscribed` event setting consent to `opted_out`; the core then exits
//! the lead's campaigns, and the timeline shows it.

use super::ingest::accept;
use super::AppState;
use crate::email::TokenKind;
use crate::model::Event;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::{json, Map};

/// The event type an unsubscribe records.
pub const UNSUBSCRIBED: &str = "unsubscribed";

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body style=\"font-family: sans-serif; max-width: 32em; margin: 4em auto\"><h1>{title}</h1>{body}</body></html>"
    );
    (status, Html(html)).into_response()
}

fn refused() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Invalid link",
        "<p>This unsubscribe link is not valid. Use the link from the email as it is.</p>",
    )
}

/// The unsubscribe page: a button, nothing done (mail scanners follow links).
#[utoipa::path(get, path = "/unsubscribe/{token}", tag = "unsubscribe",
    params(("token" = String, Path, description = "The token from the email's link.")),
    responses(
        (status = 200, description = "A page with the button.", content_type = "text/html", body = String),
        (status = 400, description = "A bad token: a page saying so.", content_type = "text/html", body = String),
    ))]
pub async fn confirm(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    if state.secret.verify(TokenKind::Unsubscribe, &token).is_err() {
        return refused();
    }
    // The token is URL-safe base64 and a dot: safe inside the attribute.
    page(
        StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<p>Stop receiving these emails?</p><form method=\"post\" action=\"/unsubscribe/{token}\">\
             <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">Unsubscribe</button></form>"
        ),
    )
}

/// Unsubscribes (the button, or a mail client's RFC 8058 one-click POST).
#[utoipa::path(post, path = "/unsubscribe/{token}", tag = "unsubscribe",
    params(("token" = String, Path, description = "The token from the email's link.")),
    responses(
        (status = 200, description = "Unsubscribed: a page saying so.", content_type = "text/html", body = String),
        (status = 400, description = "A bad token: a page saying so.", content_type = "text/html", body = String),
        (status = 503, description = "Not stored; retry.", body = super::doc::ErrorBody),
    ))]
pub async fn unsubscribe(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let lead = match state.secret.verify(TokenKind::Unsubscribe, &token) {
        Ok(lead) => lead,
        Err(e) => {
            tracing::info!(error = %e, "unsubscribe with a bad token refused");
            return refused();
        }
    };
    let now = state.clock.now();
    let mut traits = Map::new();
    traits.insert("consent".into(), json!("opted_out"));
    let event = Event {
        id: format!("unsubscribe:{lead}:{}", now.timestamp_millis()),
        lead,
        kind: UNSUBSCRIBED.into(),
        at: now,
        properties: Map::from_iter([("via".to_string(), json!("link"))]),
        traits,
        imported: None,
    };
    match accept(&state, vec![event], now).await {
        Ok(_) => page(
            StatusCode::OK,
            "Unsubscribed",
            "<p>You will not receive these emails any more.</p>",
        ),
        Err(e) => e.into_response(),
    }
}
