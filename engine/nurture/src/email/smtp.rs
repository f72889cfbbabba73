//! A pool of SMTP connections built from lettre's connection type.
//!
//! Why not lettre's own pooled transport: it connects without `TCP_NODELAY`
//! and writes a message's end (`CRLF . CRLF`) as a second small write, which
//! Nagle's algorithm holds back until the server acknowledges the body; the
//! server, with nothing to say yet, delays that acknowledgement (40 ms on
//! Linux). Every message then costs 40 ms per connection: 360 messages/s over
//! 16 connections to a local sink. Here plain and STARTTLS connections are
//! opened by us with `TCP_NODELAY` and handed to lettre, which does the SMTP.

use super::transport::{ConfigError, SendError};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // StartTls is the protocol's name
enum Tls {
    /// Plain text (a local relay).
    None,
    /// STARTTLS when offered; `required` refuses servers that do not offer it.
    StartTls { required: bool },
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

#[derive(Debug, Clone)]
struct Settings {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
}

pub struct Pool {
    settings: Settings,
    idle: Mutex<Vec<AsyncSmtpConnection>>,
    slots: Semaphore,
}

impl Pool {
    /// Where mail goes, for the start-up log: host, port and TLS, never the
    /// credentials (only whether there are some).
    pub fn describe(&self) -> String {
        let s = &self.settings;
        let tls = match s.tls {
            Tls::None => "plain",
            Tls::StartTls { required: true } => "starttls required",
            Tls::StartTls { required: false } => "starttls opportunistic",
            Tls::Implicit => "tls",
        };
        let login = if s.credentials.is_some() {
            ", with login"
        } else {
            ""
        };
        format!("smtp {}:{} ({tls}{login})", s.host, s.port)
    }

    /// `smtp://[user:pass@]host[:port][/ehlo-name][?tls=required|opportunistic]`
    /// or `smtps://...` (lettre's URL format; port 587 and 465 by default).
    pub fn from_url(url: &str, size: usize, timeout: Duration) -> Result<Pool, ConfigError> {
        let u = url::Url::parse(url).map_err(|e| ConfigError::new(e.to_string()))?;
        let tls_param = u
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let (tls, default_port) = match (u.scheme(), tls_param.as_deref()) {
            ("smtps", None) => (Tls::Implicit, 465),
            ("smtp", None) => (Tls::None, 587),
            ("smtp", Some("required")) => (Tls::StartTls { required: true }, 587),
            ("smtp", Some("opportunistic")) => (Tls::StartTls { required: false }, 587),
            (scheme, tls) => {
                return Err(ConfigError::new(format!(
                    "unsupported scheme {scheme:?} with tls={tls:?}: use smtp://, smtp://...?tls=required|opportunistic or smtps://"
                )))
            }
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ConfigError::new("no host".into()))?
            .trim_matches(['[', ']'])
            .to_string();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|e| ConfigError::new(format!("credentials: {e}")))
        };
        let credentials = if u.username().is_empty() {
            None
        } else {
            Some(Credentials::new(
                decode(u.username())?,
                decode(u.password().unwrap_or(""))?,
            ))
        };
        let ehlo = u.path().trim_start_matches('/');
        let hello = if ehlo.is_empty() {
            ClientId::default()
        } else {
            ClientId::Domain(ehlo.to_string())
        };
        Ok(Pool {
            settings: Settings {
                host,
                port: u.port().unwrap_or(default_port),
                tls,
                credentials,
                hello,
                timeout,
            },
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(size),
        })
    }

    /// A new connection, greeted and logged in, kept idle for the next send.
    pub async fn probe(&self) -> Result<(), SendError> {
        let conn = self.connect().await?;
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        Ok(())
    }

    /// Sends one message over an idle connection, or a new one.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| SendError::Transient(e.to_string()))?;
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(c) if !c.has_broken() => c,
            _ => self.connect().await?,
        };
        let sent = tokio::time::timeout(self.settings.timeout, conn.send(envelope, message)).await;
        match sent {
            Ok(Ok(_)) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn);
                Ok(())
            }
            Ok(Err(e)) => {
                // A refusal leaves the connection usable; anything else may not.
                if e.is_permanent() && !conn.has_broken() {
                    self.idle
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(conn);
                } else {
                    conn.abort().await;
                }
                Err(super::transport::classify(e))
            }
            Err(_) => {
                conn.abort().await;
                Err(SendError::Transient("SMTP timed out".into()))
            }
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let s = &self.settings;
        let transient = |e: &dyn std::fmt::Display| SendError::Transient(e.to_string());
        let mut conn = if s.tls == Tls::Implicit {
            // lettre's own connector (TLS from the first byte).
            let tls = TlsParameters::new(s.host.clone()).map_err(|e| transient(&e))?;
            AsyncSmtpConnection::connect_tokio1(
                (s.host.as_str(), s.port),
                Some(s.timeout),
                &s.hello,
                Some(tls),
                None,
            )
            .await
            .map_err(|e| transient(&e))?
        } else {
            let tcp = tokio::time::timeout(
                s.timeout,
                tokio::net::TcpStream::connect((s.host.as_str(), s.port)),
            )
            .await
            .map_err(|_| SendError::Transient("connecting timed out".into()))?
            .map_err(|e| transient(&format!("connecting to {}:{}: {e}", s.host, s.port)))?;
            tcp.set_nodelay(true).map_err(|e| transient(&e))?;
            let mut conn = tokio::time::timeout(
                s.timeout,
                AsyncSmtpConnection::connect_with_transport(
                    Box::new(Coalesced::new(tcp)),
                    &s.hello,
                ),
            )
            .await
            .map_err(|_| SendError::Transient("SMTP greeting timed out".into()))?
            .map_err(|e| transient(&e))?;
            if let Tls::StartTls { required } = s.tls {
                if conn.can_starttls() {
                    let tls = TlsParameters::new(s.host.clone()).map_err(|e| transient(&e))?;
                    conn.starttls(tls, &s.hello)
                        .await
                        .map_err(|e| transient(&e))?;
                } else if required {
                    return Err(transient(
                        &"the server does not offer STARTTLS (tls=required)",
                    ));
                }
            }
            conn
        };
        if let Some(c) = &s.credentials {
            conn.auth(DEFAULT_MECHANISMS, c)
                .await
                .map_err(|e| transient(&format!("authentication: {e}")))?;
        }
        Ok(conn)
    }
}

/// A TCP stream whose writes wait until the next read (or 64 KiB).
///
/// SMTP without PIPELINING is request, then reply: the client never reads
/// before its request is complete, and the server never answers before it
/// has all of it. lettre writes (and flushes) a message's body and its final
/// `CRLF . CRLF` separately, which with `TCP_NODELAY` costs two segments, two
/// syscalls and two wake-ups of the server per message; sending what was
/// written when the reply is awaited makes that one, and changes nothing else
/// (postfix's `smtp-source` writes the same way).
#[derive(Debug)]
struct Coalesced {
    tcp: tokio::net::TcpStream,
    out: Vec<u8>,
    /// How much of `out` has been sent.
    sent: usize,
}

/// Above this, written bytes go out without waiting for a read.
const COALESCE_MAX: usize = 64 << 10;

impl Coalesced {
    fn new(tcp: tokio::net::TcpStream) -> Coalesced {
        Coalesced {
            tcp,
            out: Vec::with_capacity(4096),
            sent: 0,
        }
    }

    /// Sends everything written so far.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.out.len() {
            match Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Coalesced {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalesced {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= COALESCE_MAX {
            ready!(this.poll_send(cx))?;
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Flushing is left to the next read; see the type's comment.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Coalesced {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_ports_tls_and_decoded_credentials() {
        let p = Pool::from_url(
            "smtp://us%40er:p%3Ass@mail.example:2525/me.example?tls=required",
            1,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(p.settings.host, "mail.example");
        assert_eq!(p.settings.port, 2525);
        assert_eq!(p.settings.tls, Tls::StartTls { required: true });
        assert_eq!(
            p.settings.credentials,
            Some(Credentials::new("us@er".into(), "p:ss".into()))
        );
        assert_eq!(p.settings.hello, ClientId::Domain("me.example".into()));
        let p = Pool::from_url("smtps://mail.example", 1, Duration::from_secs(1)).unwrap();
        assert_eq!((p.settings.port, p.settings.tls), (465, Tls::Implicit));
        let p = Pool::from_url("smtp://127.0.0.1:25", 1, Duration::from_secs(1)).unwrap();
        assert_eq!((p.settings.port, p.settings.tls), (25, Tls::None));
        for bad in ["http://x", "smtp://", "smtp://x?tls=maybe", "not a url"] {
            assert!(
                Pool::from_url(bad, 1, Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
    }
}
