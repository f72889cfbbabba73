//! Watching something on disk for changes: checked every second and on
//! SIGHUP, and only reported once it holds still, so a file being written is
//! not taken half-written. The rules reload and the write-keys file share it.

use std::time::Duration;
use tokio::sync::watch;

/// Polls `look` (what the watched thing looks like now) for changes.
pub struct Changes<T, F> {
    look: F,
    seen: T,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl<T: PartialEq, F: FnMut() -> T> Changes<T, F> {
    pub fn new(mut look: F) -> Self {
        let seen = look();
        Changes {
            look,
            seen,
            #[cfg(unix)]
            hup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// Waits for a change (or SIGHUP, which counts as one) and returns what
    /// it looks like once it has held still (a tenth of a second, a few
    /// times at most); `None` when `stop` turns. The caller takes it with
    /// [`Changes::seen`], or leaves it, to be reported again next time.
    pub async fn next(&mut self, stop: &mut watch::Receiver<bool>) -> Option<T> {
        loop {
            #[cfg(unix)]
            let hup = async {
                match self.hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<()>();
            let forced = tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                _ = hup => true,
                _ = stop.changed() => return None,
            };
            let mut now = (self.look)();
            if !forced && now == self.seen {
                continue;
            }
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let later = (self.look)();
                if later == now {
                    break;
                }
                now = later;
            }
            return Some(now);
        }
    }

    /// `now` is taken: only a change from it is reported next.
    pub fn seen(&mut self, now: T) {
        self.seen = now;
    }
}
