//! How the API is served: our own accept loop over hyper's HTTP/1 server,
//! so that a connection cannot hold the daemon hostage. A client gets
//! `header_timeout` to send a complete request head (new or idle between
//! keep-alive requests: hyper runs one timer for both); at most
//! `max_connections` are open at once (the rest wait in the kernel's
//! backlog); on shutdown, connections get `shutdown_timeout` to finish
//! their request and are then closed. A full file-descriptor table on
//! accept is said as such, once per episode.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

/// The HTTP server's limits (`serve --header-timeout`, `--max-connections`,
/// `--shutdown-timeout`, `--auth-failures-per-minute`,
/// `--ingest-per-key`, `--ingest-per-address`).
#[derive(Clone, Copy, Debug)]
pub struct HttpSettings {
    /// A connection that has not sent a whole request head for this long
    /// (new, mid-header, or idle after a response) is closed.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// After SIGTERM: how long open requests may run before their
    /// connections are closed.
    pub shutdown_timeout: Duration,
    /// Failed authentications per minute one address may make before it
    /// gets 429 (0: no limit).
    pub auth_failures_per_minute: u32,
    /// Ingest requests per second one write key may make (0: no limit).
    pub ingest_per_key: u32,
    /// Ingest requests per second one address may make (0: no limit).
    pub ingest_per_address: u32,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_timeout: Duration::from_secs(10),
            auth_failures_per_minute: 60,
            ingest_per_key: 0,
            ingest_per_address: 0,
        }
    }
}

/// The address a request came from, put in its extensions by [`serve`]
/// (for the rate limit on failed authentications).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Serves `app` on `listener` until `shutdown` completes; then stops
/// accepting, lets open requests finish for `shutdown_timeout`, and closes
/// whatever is left.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let (close_tx, close_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut fd_exhausted = false;
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                if fd_exhausted {
                    fd_exhausted = false;
                    tracing::info!("accepting connections again: file descriptors available");
                }
                let app = app.clone();
                let close = close_rx.clone();
                conns.spawn(async move {
                    connection(stream, peer, app, settings, close).await;
                    drop(permit);
                });
            }
            Err(e) => {
                if is_fd_exhausted(&e) {
                    if !fd_exhausted {
                        fd_exhausted = true;
                        tracing::error!(
                            error = %e,
                            open = conns.len(),
                            "cannot accept connections: the file-descriptor table is full \
                             (raise `ulimit -n` / LimitNOFILE, or lower --max-connections)"
                        );
                    }
                } else {
                    tracing::warn!(error = %e, "accepting a connection failed");
                }
                // Accept errors repeat at once; give the table time to drain.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let _ = close_tx.send(true);
    let drained = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(settings.shutdown_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = conns.len(),
            timeout_s = settings.shutdown_timeout.as_secs_f64(),
            "closing connections still open after --shutdown-timeout"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

/// EMFILE (this process) or ENFILE (the whole system).
pub fn is_fd_exhausted(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    settings: HttpSettings,
    mut close: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(Peer(peer));
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            return;
        }
        _ = close.wait_for(|c| *c) => {}
    }
    // Shutting down: finish the request in progress, then close (an idle
    // connection closes at once). The deadline is [`serve`]'s.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Raises the soft limit on open files to the hard one (many systems start
/// daemons at 1024), so that connections and rules files do not run out of
/// descriptors first. Returns (before, after) when it could read them.
pub fn raise_nofile_limit() -> Option<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Some((before, before));
            }
        }
        Some((before, lim.rlim_cur))
    }
}
