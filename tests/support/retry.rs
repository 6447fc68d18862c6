//! MISP's retry of a failed sync request, for the failover tests. Each
//! attempt opens a connection of its own (one cut by a switch-over is never
//! reused), and when no answer comes the attempt says what the client saw:
//! the connection refused, reset (closed before a whole answer) or timed
//! out. An event push is repeated until it is stored, as MISP's next sync
//! run repeats it: first `HEAD /events/view/<uuid>` (an earlier add may
//! have been stored with its answer lost in the switch), then the add only
//! if the event is not there, so a retry never adds an event twice.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use misp_guard_gw::http::io::HttpIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{client_config, read_answer};

/// Longest wait for the TCP connection, the TLS handshake, the answer.
const CONNECT: Duration = Duration::from_secs(1);
const HANDSHAKE: Duration = Duration::from_secs(2);
const ANSWER: Duration = Duration::from_secs(3);
/// Pause between two attempts.
const PAUSE: Duration = Duration::from_millis(100);

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer with this status.
    Status(u16),
    /// The connection was refused (a reset answering the SYN).
    Refused,
    /// The connection was reset or closed before a whole answer.
    Reset,
    /// Connecting, the handshake or the answer took too long.
    Timeout,
    /// Anything else (the text says what).
    Failed(String),
}

impl Outcome {
    /// A short name for counting: the status, or `refused`, `reset`, ...
    pub fn label(&self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Refused => "refused".into(),
            Outcome::Reset => "reset".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Failed(why) => format!("failed ({why})"),
        }
    }
}

fn io_outcome(e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::Refused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Outcome::Reset,
        io::ErrorKind::TimedOut => Outcome::Timeout,
        _ => Outcome::Failed(e.to_string()),
    }
}

/// A MISP server's sync client for one remote, one connection per attempt.
pub struct OneShot {
    addr: SocketAddr,
    host: String,
    tls: Arc<rustls::ClientConfig>,
}

impl OneShot {
    /// The remote `host` at `addr`, trusting only `ca_file`.
    pub fn new(addr: SocketAddr, host: &str, ca_file: &Path) -> OneShot {
        OneShot {
            addr,
            host: host.to_string(),
            tls: client_config(ca_file),
        }
    }

    /// One request on a new connection.
    pub async fn attempt(&self, method: &str, path: &str, body: Option<&Value>) -> Outcome {
        let tcp = match tokio::time::timeout(CONNECT, TcpStream::connect(self.addr)).await {
            Err(_) => return Outcome::Timeout,
            Ok(Err(e)) => return io_outcome(&e),
            Ok(Ok(tcp)) => tcp,
        };
        tcp.set_nodelay(true).ok();
        let name = ServerName::try_from(self.host.clone()).expect("a DNS name");
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let tls = match tokio::time::timeout(HANDSHAKE, connector.connect(name, tcp)).await {
            Err(_) => return Outcome::Timeout,
            Ok(Err(e)) => return io_outcome(&e),
            Ok(Ok(tls)) => tls,
        };
        let payload = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let mut out = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: sync-key\r\n\
             Accept: application/json\r\nContent-Type: application/json\r\n\
             User-Agent: MISP 2.5.2 - #sync\r\nConnection: close\r\n",
            self.host
        );
        if body.is_some() {
            out.push_str(&format!("Content-Length: {}\r\n", payload.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&payload);
        let mut tls = tls;
        if let Err(e) = async {
            tls.write_all(&bytes).await?;
            tls.flush().await
        }
        .await
        {
            return io_outcome(&e);
        }
        let mut io = HttpIo::new(tls);
        match tokio::time::timeout(ANSWER, read_answer(&mut io, method)).await {
            Err(_) => Outcome::Timeout,
            Ok(None) => Outcome::Reset,
            Ok(Some(answer)) => Outcome::Status(answer.status),
        }
    }
}

/// Every attempt of one push, and when it was stored (if it was).
#[derive(Debug, Default)]
pub struct Delivery {
    pub attempts: Vec<(Instant, Outcome)>,
    pub delivered_at: Option<Instant>,
}

impl Delivery {
    /// How often the client saw each outcome other than the success.
    pub fn failures(&self) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for (_, o) in &self.attempts {
            if !matches!(o, Outcome::Status(200 | 404)) {
                *seen.entry(o.label()).or_insert(0) += 1;
            }
        }
        seen
    }
}

/// Pushes `event` (`{"Event": {...}}`) until the remote has it or `within`
/// has passed: `HEAD` the event (200: stored, possibly by an attempt whose
/// answer was lost), on 404 add it; a refusal (403) ends the push.
pub async fn deliver(remote: &OneShot, event: &Value, within: Duration) -> Delivery {
    let uuid = event["Event"]["uuid"].as_str().expect("event uuid");
    let deadline = Instant::now() + within;
    let mut d = Delivery::default();
    while Instant::now() < deadline {
        let head = remote
            .attempt("HEAD", &format!("/events/view/{uuid}"), None)
            .await;
        d.attempts.push((Instant::now(), head.clone()));
        match head {
            Outcome::Status(200) => {
                d.delivered_at = Some(Instant::now());
                break;
            }
            Outcome::Status(404) => {
                let add = remote
                    .attempt("POST", "/events/add/metadata:1", Some(event))
                    .await;
                d.attempts.push((Instant::now(), add.clone()));
                match add {
                    Outcome::Status(200) => {
                        d.delivered_at = Some(Instant::now());
                        break;
                    }
                    Outcome::Status(403) => break,
                    _ => {}
                }
            }
            _ => {}
        }
        tokio::time::sleep(PAUSE).await;
    }
    d
}
