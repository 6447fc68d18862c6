//! The audit trail: one JSON line per decided exchange, allowed and blocked
//! alike, written by a thread of its own so the data path never waits for
//! the disk.
//!
//! The data path hands a finished [`Record`] to a bounded channel with
//! `try_send`: when the channel is full (the disk cannot keep up) or a write
//! fails, the record is counted in [`AuditLog::failures`] and logged — never
//! silently dropped, and never a reason to hold or refuse an exchange.
//! [`AuditLog::reopen`] (SIGHUP) makes the writer open the file again, for
//! logrotate's rename-then-signal.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;

use serde::Serialize;

/// Records waiting for the writer; beyond this the data path does not wait.
pub const QUEUE: usize = 8192;

/// What the gateway decided about one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Block,
    /// Monitor mode: the policy would have blocked it; it was forwarded.
    WouldBlock,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Block => "block",
            Decision::WouldBlock => "would_block",
        }
    }
}

/// Where in the exchange the decision was taken (the last stage reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Refused with the connection, before any request was read: who may
    /// talk to whom, the original destination, the CONNECT authority, SNI.
    Connection,
    RequestHead,
    RequestBody,
    Upstream,
    ResponseHead,
    ResponseBody,
}

/// One audit line. Field names are an interface (README "Audit log").
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// RFC 3339, UTC.
    pub ts: String,
    /// Connection id, shared by the exchanges of one connection.
    pub conn: u64,
    /// `explicit`, `redirect` or `tproxy`.
    pub listener: &'static str,
    pub client: String,
    pub src_instance: Option<String>,
    pub src_compartment: Option<String>,
    pub dst_instance: Option<String>,
    pub dst_compartment: Option<String>,
    /// Server name the client asked for in its TLS ClientHello.
    pub sni: Option<String>,
    pub method: String,
    /// Request target path with its query; never the userinfo of an
    /// absolute-form target.
    pub path: String,
    pub stage: Stage,
    pub decision: Decision,
    /// Why it was blocked (misp-guard's wording) or why it failed.
    pub reason: Option<String>,
    /// Status the client was answered (0: the connection ended first).
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// The MISP objects the bodies carried (uuids only).
    pub uuids: Vec<String>,
    /// More uuids were carried than listed.
    pub uuids_truncated: bool,
    pub duration_ms: f64,
}

enum Msg {
    Line(Box<Record>),
    Reopen,
}

/// The handle the data path writes through.
pub struct AuditLog {
    tx: SyncSender<Msg>,
    failures: Arc<AtomicU64>,
    path: PathBuf,
}

impl AuditLog {
    /// Opens (appends to) `path` and starts the writer thread. Fails when
    /// the file cannot be opened, so a wrong path stops the start.
    pub fn open(path: &Path) -> Result<AuditLog, String> {
        let file = open_append(path).map_err(|e| format!("audit log {}: {e}", path.display()))?;
        let (tx, rx) = sync_channel(QUEUE);
        let failures = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            path: path.to_path_buf(),
            out: Some(BufWriter::new(file)),
            failures: failures.clone(),
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("audit writer thread: {e}"))?;
        Ok(AuditLog {
            tx,
            failures,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a record; never blocks.
    pub fn record(&self, r: Record) {
        match self.tx.try_send(Msg::Line(Box::new(r))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.failed("queue full"),
            Err(TrySendError::Disconnected(_)) => self.failed("writer stopped"),
        }
    }

    /// Makes the writer reopen the file before its next line (SIGHUP).
    pub fn reopen(&self) {
        if self.tx.try_send(Msg::Reopen).is_err() {
            self.failed("queue full, reopen request dropped");
        }
    }

    /// Records lost so far (queue full, write or reopen failures).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn failed(&self, why: &str) {
        count_failure(&self.failures, why);
    }
}

/// Counts a lost record and logs it; under a flood, every 1000th only (the
/// counter keeps the exact number).
fn count_failure(failures: &AtomicU64, why: &str) {
    let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
    if n == 1 || n.is_multiple_of(1000) {
        tracing::error!(lost = n, "audit record lost: {why}");
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    path: PathBuf,
    /// None after a failed reopen: lines are counted as lost until a
    /// later reopen works.
    out: Option<BufWriter<File>>,
    failures: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            // Flush once the queue is empty, so lines reach the file
            // promptly without a syscall per line under load.
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => {
                    self.flush();
                    match rx.recv() {
                        Ok(m) => m,
                        Err(_) => return,
                    }
                }
                Err(TryRecvError::Disconnected) => {
                    self.flush();
                    return;
                }
            };
            match msg {
                Msg::Reopen => self.reopen(),
                Msg::Line(r) => self.write(&r),
            }
        }
    }

    fn write(&mut self, r: &Record) {
        let Some(out) = self.out.as_mut() else {
            count_failure(&self.failures, "audit log not open");
            return;
        };
        let mut line = match serde_json::to_vec(r) {
            Ok(l) => l,
            Err(e) => {
                count_failure(&self.failures, &e.to_string());
                return;
            }
        };
        line.push(b'\n');
        if let Err(e) = out.write_all(&line) {
            count_failure(&self.failures, &format!("{}: {e}", self.path.display()));
        }
    }

    fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.flush() {
                count_failure(&self.failures, &format!("{}: {e}", self.path.display()));
            }
        }
    }

    fn reopen(&mut self) {
        self.flush();
        match open_append(&self.path) {
            Ok(f) => {
                self.out = Some(BufWriter::new(f));
                tracing::info!("audit log reopened: {}", self.path.display());
            }
            Err(e) => {
                self.out = None;
                tracing::error!("audit log {} cannot be reopened: {e}", self.path.display());
            }
        }
    }
}

/// RFC 3339 UTC timestamp for a record.
pub fn now_rfc3339() -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The path of a request target as audited: an absolute-form target loses
/// its userinfo (`http://user:pass@host/...`); the query is kept.
pub fn audited_path(target: &str) -> String {
    let Some((scheme, rest)) = target.split_once("://") else {
        return target.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{tail}"),
        None => target.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> Record {
        Record {
            ts: now_rfc3339(),
            conn: n,
            listener: "explicit",
            client: "127.0.0.1".into(),
            src_instance: Some("a".into()),
            src_compartment: Some("c1".into()),
            dst_instance: None,
            dst_compartment: None,
            sni: None,
            method: "POST".into(),
            path: "/events/add".into(),
            stage: Stage::RequestBody,
            decision: Decision::WouldBlock,
            reason: Some("event has blocked tag: tlp:red".into()),
            status: 200,
            request_bytes: 10,
            response_bytes: 20,
            uuids: vec![],
            uuids_truncated: false,
            duration_ms: 1.5,
        }
    }

    fn lines(path: &Path, want: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let got: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
                .collect();
            if got.len() >= want {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("fewer than {want} lines in {}", path.display());
    }

    #[test]
    fn lines_are_json_and_survive_a_logrotate_rename() {
        let dir = std::env::temp_dir().join(format!("audit-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.record(record(1));
        let first = lines(&path, 1);
        assert_eq!(first[0]["decision"], "would_block");
        assert_eq!(first[0]["stage"], "request_body");
        assert_eq!(first[0]["conn"], 1);
        // logrotate: rename, then SIGHUP → reopen; new lines go to a new file.
        let rotated = dir.join("audit.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.record(record(2));
        let after = lines(&path, 1);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0]["conn"], 2);
        assert_eq!(lines(&rotated, 1).len(), 1);
        assert_eq!(log.failures(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_reopen_counts_lost_lines_instead_of_blocking() {
        let dir = std::env::temp_dir().join(format!("audit-unit-fail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        // The directory disappears: reopening fails, lines are counted.
        std::fs::remove_dir_all(&dir).unwrap();
        log.reopen();
        log.record(record(3));
        for _ in 0..200 {
            if log.failures() > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(log.failures(), 1);
    }

    #[test]
    fn credentials_of_an_absolute_target_are_not_audited() {
        assert_eq!(
            audited_path("http://user:pw@b.test:80/events/index?minimal=1"),
            "http://b.test:80/events/index?minimal=1"
        );
        assert_eq!(audited_path("/events/add?x=1"), "/events/add?x=1");
    }
}
