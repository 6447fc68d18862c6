//! Reload on config-file change (on by default, as misp-guard does;
//! `gateway.watch_config: false` or `--no-watch-config` turn it off): the
//! file is read every second and a change of its content asks for the same
//! reload as SIGHUP.
//!
//! Polling by path, not watching an inode: editors and configuration
//! management replace the file by renaming a new one over it, and a poll by
//! name sees the new file whatever happened to the old one. A change is
//! acted on once two reads half a second apart agree (debounce: a file
//! being written in several steps is not reloaded half-written), and only
//! once per content: a broken file is reported once, not every second.
//!
//! Every reload (by SIGHUP too) records the content it read in [`Seen`], so
//! an edit followed by `systemctl reload` is applied once, not twice.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

const EVERY: Duration = Duration::from_secs(1);
const SETTLE: Duration = Duration::from_millis(500);

/// A content hash of the config file.
pub type Fingerprint = [u8; 32];

pub fn fingerprint_of(bytes: &[u8]) -> Fingerprint {
    Sha256::digest(bytes).into()
}

/// The file's content hash; None while it cannot be read.
pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    // Missing or unreadable for a moment (mid-rename): no opinion yet.
    std::fs::read(path).ok().map(|b| fingerprint_of(&b))
}

/// The content the last start or reload read (applied or refused).
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Option<Fingerprint>>>);

impl Seen {
    pub fn set(&self, f: Fingerprint) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    pub fn get(&self) -> Option<Fingerprint> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Is `now` a content no start or reload has read yet?
fn is_new(now: Option<Fingerprint>, seen: Option<Fingerprint>) -> bool {
    now.is_some() && now != seen
}

/// Sends `()` on `changed` for each settled content of `path` that no
/// start or reload has read yet (`seen`).
pub async fn config_file(
    path: PathBuf,
    seen: Seen,
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
        if !is_new(now, seen.get()) {
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        let p = path.clone();
        let settled = tokio::task::spawn_blocking(move || fingerprint(&p))
            .await
            .ok()
            .flatten();
        if settled != now || !is_new(settled, seen.get()) {
            continue; // still being written, or a SIGHUP reload read it
        }
        tracing::info!("config file {} changed: reloading", path.display());
        // The reload records what it reads; until it has, do not ask twice.
        if let Some(f) = settled {
            seen.set(f);
        }
        if changed.send(()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_readable_unseen_content_is_new() {
        let a = fingerprint_of(b"{}");
        let b = fingerprint_of(b"{ }");
        assert!(is_new(Some(a), None));
        assert!(is_new(Some(b), Some(a)));
        assert!(!is_new(Some(a), Some(a)));
        assert!(!is_new(None, Some(a)), "an unreadable file is no change");
        assert!(!is_new(None, None));
    }

    #[test]
    fn seen_is_shared_between_clones() {
        let s = Seen::default();
        let t = s.clone();
        assert_eq!(t.get(), None);
        s.set(fingerprint_of(b"x"));
        assert_eq!(t.get(), Some(fingerprint_of(b"x")));
    }
}
