//! Hot reload: the rules directory is checked every second (and on SIGHUP).
//! A change that does not compile is rejected with its errors logged, and the
//! rules in force keep running.

use super::changes::Changes;
use super::metrics::Metrics;
use super::rules::{Active, RulesHandle};
use crate::rules::{collect_yaml, Ruleset};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
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
    let mut changes = Changes::new(|| fingerprint(&dir));
    let mut fd_exhausted = false;
    while let Some(now) = changes.next(&mut stop).await {
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
        changes.seen(now);
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
