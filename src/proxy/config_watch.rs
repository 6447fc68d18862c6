//! Reload on config-file change (`--watch-config`): the file is read every
//! second and a change of its content asks for the same reload as SIGHUP.
//!
//! Polling by path, not watching an inode: editors and configuration
//! management replace the file by renaming a new one over it, and a poll by
//! name sees the new file whatever happened to the old one. A change is
//! acted on once two reads half a second apart agree (debounce: a file
//! being written in several steps is not reloaded half-written), and only
//! once per content: a broken file is reported once, not every second.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

const EVERY: Duration = Duration::from_secs(1);
const SETTLE: Duration = Duration::from_millis(500);

/// The file's content hash; None while it cannot be read.
pub fn fingerprint(path: &std::path::Path) -> Option<[u8; 32]> {
    // Missing or unreadable for a moment (mid-rename): no opinion yet.
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

/// Sends `()` on `changed` for each settled new content of `path` other
/// than `last` (the content the running policy was read from, taken at
/// start before anything could change it unseen).
pub async fn config_file(
    path: PathBuf,
    mut last: Option<[u8; 32]>,
    changed: mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
        let p = path.clone();
        let now = tokio::task::spawn_blocking(move || fingerprint(&p))
            .await
            .ok()
            .flatten();
        if now.is_none() || now == last {
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        let p = path.clone();
        let settled = tokio::task::spawn_blocking(move || fingerprint(&p))
            .await
            .ok()
            .flatten();
        if settled != now {
            continue; // still being written: look again next tick
        }
        last = now;
        tracing::info!("config file {} changed: reloading", path.display());
        if changed.send(()).await.is_err() {
            return;
        }
    }
}
