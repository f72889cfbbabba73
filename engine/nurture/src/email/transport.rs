//! Where messages go: an SMTP server over a pool of lettre connections
//! (`smtp.rs`), or, by default, one `.eml` file per message in the outbox folder.

use super::compose::Outgoing;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connections kept open to the SMTP server, and messages in flight at once.
pub const CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth another try later, and the server is not reachable or not
    /// serving: connection and TLS errors, timeouts, 421.
    #[error("{0}")]
    Transient(String),
    /// Worth another try later, but the server answered (a 4xx reply for
    /// this message: greylisting, a full mailbox): it is up.
    #[error("{0}")]
    Deferred(String),
    /// The server refused for good (5xx), or the message cannot be built.
    #[error("{message}")]
    Permanent {
        message: String,
        /// The address itself was refused (550, 551, 553): a hard bounce.
        bounce: bool,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("--smtp-url: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(super) fn new(message: String) -> ConfigError {
        ConfigError(message)
    }
}

pub enum Transport {
    Smtp(super::smtp::Pool),
    Files(PathBuf),
}

impl Transport {
    /// SMTP when a URL is given (`smtp://user:pass@host:587?tls=required`,
    /// `smtps://host`), else files in `outbox`.
    pub fn new(smtp_url: Option<&str>, outbox: &Path) -> Result<Transport, ConfigError> {
        match smtp_url {
            Some(url) => Ok(Transport::Smtp(super::smtp::Pool::from_url(
                url,
                CONCURRENCY,
                Duration::from_secs(30),
            )?)),
            None => {
                std::fs::create_dir_all(outbox)
                    .map_err(|e| ConfigError(format!("outbox {}: {e}", outbox.display())))?;
                Ok(Transport::Files(outbox.to_path_buf()))
            }
        }
    }

    /// `smtp` or `files`: the `transport` label of the mail metrics, and
    /// the name outages are logged under.
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Smtp(_) => "smtp",
            Transport::Files(_) => "files",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::Smtp(pool) => pool.describe(),
            Transport::Files(dir) => format!("files in {}", dir.display()),
        }
    }

    /// Whether this message is known to have gone out already. Only the file
    /// transport can tell; an SMTP server cannot be asked.
    pub fn already_sent(&self, m: &Outgoing) -> bool {
        match self {
            Transport::Files(dir) => dir.join(file_name(m)).exists(),
            Transport::Smtp(_) => false,
        }
    }

    /// Whether the server takes connections again (connect, greet, log in;
    /// the connection is kept for the next send). Files always do.
    pub async fn probe(&self) -> Result<(), SendError> {
        match self {
            Transport::Smtp(pool) => pool.probe().await,
            Transport::Files(_) => Ok(()),
        }
    }

    pub async fn send(&self, m: &Outgoing) -> Result<(), SendError> {
        let msg = build(m)?;
        match self {
            Transport::Smtp(pool) => pool.send(msg.envelope(), &msg.formatted()).await,
            Transport::Files(dir) => {
                let path = dir.join(file_name(m));
                let bytes = msg.formatted();
                tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
                    .await
                    .map_err(|e| SendError::Transient(e.to_string()))?
                    .map_err(|e| SendError::Transient(format!("writing the .eml file: {e}")))
            }
        }
    }
}

/// `<hex@domain>` → `hex.eml`: one file per message, so a resend overwrites.
fn file_name(m: &Outgoing) -> String {
    let id: String = m
        .message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    format!("{id}.eml")
}

/// Readers of the folder never see half a message, and a file that exists
/// survived a crash.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("eml.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The MIME message: text, or text and HTML as multipart/alternative; the
/// RFC 8058 headers on marketing mail. lettre encodes every header value, and
/// addresses must parse as addresses, so lead data cannot add headers.
pub fn build(m: &Outgoing) -> Result<Message, SendError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| SendError::Permanent {
        message: format!("{what}: {e}"),
        bounce: false,
    };
    let from: Mailbox = m.from.parse().map_err(|e| bad("From", &e))?;
    let to: Mailbox = m.to.parse().map_err(|e| SendError::Permanent {
        message: format!("To {:?}: {e}", m.to),
        bounce: true,
    })?;
    let mut b = Message::builder()
        .from(from)
        .to(to)
        .subject(super::compose::one_line(&m.subject))
        .message_id(Some(m.message_id.clone()));
    if let Some(u) = &m.unsubscribe {
        b = b
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{}>, <{}>", u.url, u.mailto),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_string(),
            ));
    }
    let built = match &m.html {
        Some(html) => b.multipart(MultiPart::alternative_plain_html(
            m.text.clone(),
            html.clone(),
        )),
        None => b.singlepart(SinglePart::plain(m.text.clone())),
    };
    built.map_err(|e| bad("message", &e))
}

pub(super) fn classify(e: lettre::transport::smtp::Error) -> SendError {
    if e.is_permanent() {
        let code = e.status().map(|c| c.to_string()).unwrap_or_default();
        SendError::Permanent {
            bounce: matches!(code.as_str(), "550" | "551" | "553"),
            message: e.to_string(),
        }
    } else {
        match e.status().map(|c| c.to_string()) {
            // 421: the service itself is going away.
            Some(code) if code != "421" => SendError::Deferred(e.to_string()),
            _ => SendError::Transient(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::compose::Unsubscribe;

    fn outgoing() -> Outgoing {
        Outgoing {
            message_id: "<abc123@acme.example>".into(),
            from: "Acme <hello@acme.example>".into(),
            to: "ann@x.example".into(),
            subject: "Hi".into(),
            text: "plain".into(),
            html: Some("<p>html</p>".into()),
            unsubscribe: Some(Unsubscribe {
                url: "https://n.example/unsubscribe/T".into(),
                mailto: "mailto:hello@acme.example?subject=unsubscribe%20T".into(),
            }),
            what: "c/1".into(),
        }
    }

    #[test]
    fn marketing_mail_is_multipart_with_one_click_unsubscribe() {
        let raw = String::from_utf8(build(&outgoing()).unwrap().formatted()).unwrap();
        // Long headers are folded; unfold them (RFC 5322 2.2.3).
        let raw = raw.replace("\r\n ", " ");
        assert!(
            raw.contains("Message-ID: <abc123@acme.example>\r\n"),
            "{raw}"
        );
        assert!(raw.contains(
            "List-Unsubscribe: <https://n.example/unsubscribe/T>, <mailto:hello@acme.example?subject=unsubscribe%20T>\r\n"
        ), "{raw}");
        assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
        assert!(raw.contains("multipart/alternative"));
    }

    #[test]
    fn addresses_that_smuggle_headers_are_refused() {
        let mut m = outgoing();
        m.to = "ann@x.example\r\nBcc: all@x.example".into();
        assert!(matches!(
            build(&m),
            Err(SendError::Permanent { bounce: true, .. })
        ));
        let mut m = outgoing();
        m.subject = "Hi\r\nBcc: all@x.example".into();
        let raw = String::from_utf8(build(&m).unwrap().formatted()).unwrap();
        assert!(!raw.contains("\r\nBcc:"), "{raw}");
    }

    #[test]
    fn the_file_transport_writes_one_file_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let t = Transport::new(None, dir.path()).unwrap();
        let m = outgoing();
        assert!(!t.already_sent(&m));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(t.send(&m)).unwrap();
        assert!(t.already_sent(&m));
        rt.block_on(t.send(&m)).unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }
}
