//! Outgoing webhooks: the body composed when the decision is stored, signed
//! per Standard Webhooks (<https://www.standardwebhooks.com>) when sent, and
//! delivered from the daemon's durable outbox (`nurture::webhooks::deliver`).
//!
//! Nothing here decides anything: which webhooks fire is the evaluator's
//! [`Effect::Webhook`]; this module only carries it out.

use crate::eval::Effect;
use crate::model::{time::Timestamp, LeadState};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("environment variable {0} (named in the webhook's secret) is not set")]
    SecretUnset(String),
    #[error("the secret is not base64 after `whsec_`: {0}")]
    SecretEncoding(String),
    #[error("webhook `{0}` is no longer in the rules")]
    Unknown(String),
    #[error("outbox row is not a webhook payload: {0}")]
    Payload(String),
    /// The request failed, with its causes (reqwest's own message omits them).
    #[error("request failed: {0}")]
    Http(String),
    #[error("the receiver answered HTTP {0}")]
    Status(u16),
}

impl WebhookError {
    /// Errors no retry can fix: the row fails at once.
    pub fn is_permanent(&self) -> bool {
        matches!(self, WebhookError::Unknown(_) | WebhookError::Payload(_))
    }
}

/// The outbox payload for an [`Effect::Webhook`] decided at `at` about `lead`
/// (as the decision left it): `{"webhook", "type", "body"}`, `body` being the
/// exact bytes to send, so every retry sends and signs the same thing.
pub fn outbox_payload(effect: &Effect, lead: &LeadState, at: Timestamp) -> Option<Value> {
    let Effect::Webhook {
        webhook,
        event,
        detail,
    } = effect
    else {
        return None;
    };
    let body = json!({
        "type": event.as_str(),
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {
            "id": lead.id,
            "email": lead.email,
            "stage": lead.stage,
            "score": lead.score,
            "fit": lead.fit,
            "owner": lead.owner,
            "consent": lead.consent,
            "offered_to": lead.offered_to,
            "change": detail,
        },
    });
    Some(json!({
        "webhook": webhook,
        "type": event.as_str(),
        "body": body.to_string(),
    }))
}

/// The signing key from a configured secret: `${VAR}` parts are read from
/// the environment, then the `whsec_` prefix (optional) is dropped and the
/// rest base64-decoded. `None` and `""` mean unsigned.
pub fn signing_key(secret: Option<&str>) -> Result<Option<Vec<u8>>, WebhookError> {
    let Some(raw) = secret else {
        return Ok(None);
    };
    let resolved = resolve_env(raw)?;
    if resolved.is_empty() {
        return Ok(None);
    }
    let b64 = resolved.strip_prefix("whsec_").unwrap_or(&resolved);
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map(Some)
        .map_err(|e| WebhookError::SecretEncoding(e.to_string()))
}

/// Replaces each `${NAME}` with that environment variable.
fn resolve_env(s: &str) -> Result<String, WebhookError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        let value = std::env::var(name).map_err(|_| WebhookError::SecretUnset(name.into()))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks reference libraries' tests.
        let key = signing_key(Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
            .unwrap()
            .unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_come_from_the_environment_and_unset_ones_are_errors() {
        std::env::set_var("NURTURE_TEST_WH_SECRET", "whsec_AAEC");
        assert_eq!(
            signing_key(Some("${NURTURE_TEST_WH_SECRET}")).unwrap(),
            Some(vec![0, 1, 2])
        );
        assert!(matches!(
            signing_key(Some("${NURTURE_TEST_WH_UNSET_XYZ}")),
            Err(WebhookError::SecretUnset(n)) if n == "NURTURE_TEST_WH_UNSET_XYZ"
        ));
        assert!(matches!(
            signing_key(Some("whsec_not base64!")),
            Err(WebhookError::SecretEncoding(_))
        ));
        assert_eq!(signing_key(None).unwrap(), None);
        assert_eq!(signing_key(Some("")).unwrap(), None);
    }
}
