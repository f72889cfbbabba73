//! Hot reload: the rules directory is checked every second (and on SIGHUP).
//! A change that does not compile is rejected with its errors logged, and the
//! rules in force keep running.

use super::metrics::Metrics;
use super::rules::{Active, RulesHandle};
use crate::rules::{collect_yaml, Ruleset};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// What the rule files look like on disk: names, sizes and times.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut files = Vec::new();
    collect_yaml(dir, &mut files, false);
    collect_yaml(dir, &mut files, true);
    let mut out: Vec<_> = files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (f, len, modified)
        })
        .collect();
    out.sort();
    out
}

pub async fn watch(
    dir: PathBuf,
    handle: RulesHandle,
    links: crate::email::Links,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = fingerprint(&dir);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut fd_exhausted = false;
    loop {
        #[cfg(unix)]
        let hup_fut = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_fut = std::future::pending::<()>();
        let forced = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            _ = hup_fut => true,
            _ = stop.changed() => return,
        };
        let mut now = fingerprint(&dir);
        if !forced && now == seen {
            continue;
        }
        // A file being written shows as a change in size or time: wait for
        // the directory to hold still (a tenth of a second, a few times at
        // most) so that a half-written file, which may even parse (an empty
        // one does), is not taken as the new rules.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let later = fingerprint(&dir);
            if later == now {
                break;
            }
            now = later;
        }
        // Out of file descriptors, the loader would find no files and say
        // so: say the real cause instead, once, and try again next time.
        if let Err(e) = std::fs::read_dir(&dir) {
            if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                if !fd_exhausted {
                    fd_exhausted = true;
                    tracing::error!(
                        error = %e,
                        "cannot read the rules directory: the file-descriptor table is full \
                         (raise `ulimit -n` / LimitNOFILE, or lower --max-connections); \
                         the previous rules keep running"
                    );
                }
                continue;
            }
        }
        fd_exhausted = false;
        seen = now;
        let d = dir.clone();
        let links = links.clone();
        let loaded =
            tokio::task::spawn_blocking(move || Ruleset::load(&d).map(|r| Active::new(r, &links)))
                .await;
        match loaded {
            Ok(Ok(Ok(active))) => {
                tracing::info!(summary = %active.rules.summary(), "rules reloaded");
                handle.replace(active);
                metrics.rules_reloaded();
            }
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "plugins could not be loaded; the previous rules keep running");
                metrics.rules_rejected(format!("plugins could not be loaded: {e}"));
            }
            Ok(Err(diags)) => {
                for d in &diags.0 {
                    tracing::error!("{d}");
                }
                tracing::error!(
                    errors = diags.0.len(),
                    "rules change rejected; the previous rules keep running"
                );
                // The first error says where; the log has them all.
                let first = diags.0.first().map(ToString::to_string).unwrap_or_default();
                let why = match diags.0.len() {
                    0 | 1 => first,
                    n => format!("{first} (and {} more errors in the log)", n - 1),
                };
                metrics.rules_rejected(why);
            }
            Err(e) => tracing::error!(error = %e, "rules reload failed"),
        }
    }
}
