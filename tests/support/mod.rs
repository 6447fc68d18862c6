//! Test fixtures for the data-path tests: a MISP-like HTTPS upstream that
//! records what it received, a gateway process, and a small client.
#![allow(dead_code)]

pub mod counting;
pub mod misp;
pub mod netns;
pub mod realmisp;
pub mod retry;
pub mod sync;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use misp_guard_gw::http::head::Headers;
use misp_guard_gw::http::io::HttpIo;
use misp_guard_gw::http::{request_framing, response_framing};
use misp_guard_gw::tls::{self, CertificateAuthority, UpstreamTlsOptions};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream saw.
#[derive(Debug, Clone)]
pub struct Received {
    /// The TCP peer the server saw.
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

pub type Log = Arc<Mutex<Vec<Received>>>;

/// `config.sample.json`'s policy with its TLS material pointed at a test's
/// files: the gateway's CA in `ca/`, each server's CA as `secret-ca.crt`
/// and `restricted-ca.crt`, no system roots.
pub fn sample_policy() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.sample.json");
    let text = std::fs::read_to_string(path).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["gateway"]["tls"] = serde_json::json!({"ca_cert": "ca/ca.crt",
        "ca_key": "ca/ca.key", "use_system_roots": false});
    config["gateway"]["instances"] = serde_json::json!({
        "misp_secret": {"upstream_ca": "secret-ca.crt"},
        "misp_restricted": {"upstream_ca": "restricted-ca.crt"}});
    config
}

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mgw-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A misp-guard instance entry with the tests' usual rules: `tlp:red` and
/// distribution 0 blocked, nothing else.
pub fn instance_json(ip: &str, host: &str, port: u16, compartment: &str) -> serde_json::Value {
    serde_json::json!({"ip": ip, "host": host, "port": port, "compartment_id": compartment,
        "affiliation": "",
        "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": ["tlp:red"]},
        "blocked_distribution_levels": ["0"], "blocked_sharing_groups_uuids": [],
        "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []})
}

/// Runs a `misp-guard-gw` subcommand that must succeed; its standard output.
pub fn gateway_cli(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_misp-guard-gw"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "misp-guard-gw {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A new gateway CA in `dir` (`misp-guard-gw ca --out DIR`, as an operator
/// makes one); returns the certificate's path, for clients to trust.
pub fn gateway_ca(dir: &Path) -> PathBuf {
    gateway_cli(&["ca", "--out", dir.to_str().unwrap()]);
    dir.join("ca.crt")
}

/// Writes a PEM file.
pub fn write_pem(path: &Path, pem: &str) {
    std::fs::File::create(path)
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
}

/// TLS for a test server named `name` at `addr`: a leaf from a new CA,
/// whose certificate is written to `ca_file` for the gateway to trust.
pub fn server_tls(addr: SocketAddr, name: &str, ca_file: &Path) -> Arc<rustls::ServerConfig> {
    let ca = CertificateAuthority::generate("test server CA").unwrap();
    write_pem(ca_file, &ca.cert_pem());
    let leaf = tls::mint_leaf(&ca, name, &[addr.ip()]).unwrap();
    tls::build_server_config(
        vec![leaf.cert_der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            leaf.key_der.secret_pkcs8_der().to_vec(),
        )),
    )
    .unwrap()
}

/// A MISP-like HTTPS server for `name`, certificate from its own CA
/// (written to `ca_file`). Answers: `GET /events/view/...` with
/// `pull_body` (+ `pull_headers`); `POST /events/add|edit...` with the
/// pushed event, as MISP answers with the event it stored (same
/// Content-Encoding) — a second `events/add` of the same `Event.uuid` gets
/// MISP's 404 "already exists" error with `Location`; everything else 200
/// `{}`; records every request.
pub async fn misp_upstream(
    addr: SocketAddr,
    name: &str,
    ca_file: &Path,
    pull_body: Arc<Mutex<Vec<u8>>>,
) -> (SocketAddr, Log) {
    let config = server_tls(addr, name, ca_file);
    let listener = TcpListener::bind(addr).await.unwrap();
    let bound = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let log2 = log.clone();
    let added: Arc<Mutex<Vec<String>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                return;
            };
            // As web servers do: responses leave without waiting for ACKs.
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            let log = log2.clone();
            let pull_body = pull_body.clone();
            let added = added.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut io = HttpIo::new(tls);
                while let Ok(Some(head)) = io.read_request_head(65536).await {
                    let framing = request_framing(&head).unwrap();
                    let body = io.read_body(framing, 1 << 30).await.unwrap();
                    log.lock().unwrap().push(Received {
                        peer,
                        method: head.method.clone(),
                        path: head.target.clone(),
                        headers: head.headers.clone(),
                        body: body.clone(),
                    });
                    let pushed_event = head.method == "POST"
                        && (head.target.starts_with("/events/add")
                            || head.target.starts_with("/events/edit/"));
                    let mut encoding = String::new();
                    let mut status = "200 OK";
                    let answer: Vec<u8> = if head.target.starts_with("/events/view/")
                        && head.method == "GET"
                    {
                        pull_body.lock().unwrap().clone()
                    } else if pushed_event {
                        if let Some(e) = head.headers.get("content-encoding") {
                            encoding =
                                format!("Content-Encoding: {}\r\n", String::from_utf8_lossy(e));
                        }
                        match stored_event_answer(&head.target, &body, &added) {
                            Ok(stored) => stored,
                            Err(id) => {
                                status = "404 Not Found";
                                encoding = format!("Location: /events/{id}\r\n");
                                serde_json::to_vec(&serde_json::json!({
                                        "name": "Event already exists, if you would like to edit it, use the url in the location header.",
                                        "message": "Event already exists, if you would like to edit it, use the url in the location header.",
                                        "url": head.target}))
                                    .unwrap()
                            }
                        }
                    } else {
                        b"{}".to_vec()
                    };
                    let mut out = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{encoding}Content-Length: {}\r\n\r\n",
                        answer.len()
                    )
                    .into_bytes();
                    if head.method != "HEAD" {
                        out.extend_from_slice(&answer);
                    }
                    if io.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (bound, log)
}

/// What MISP answers to an event push: the event as stored, without its
/// attributes, objects, reports and proposals for `metadata:1`
/// (`fetchEvent` with `metadata`). A body this cannot read (gzip, not an
/// event) is answered as sent. Err(id): an `events/add` of an `Event.uuid`
/// already added, which MISP refuses with the stored event's id.
fn stored_event_answer(
    target: &str,
    body: &[u8],
    added: &Mutex<Vec<String>>,
) -> Result<Vec<u8>, usize> {
    type Members = std::collections::BTreeMap<String, Box<serde_json::value::RawValue>>;
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Doc {
        #[serde(rename = "Event")]
        event: Members,
    }
    let Ok(mut doc) = serde_json::from_slice::<Doc>(body) else {
        return Ok(body.to_vec());
    };
    if let (true, Some(uuid)) = (target.starts_with("/events/add"), doc.event.get("uuid")) {
        let uuid = uuid.get().to_string();
        let mut added = added.lock().unwrap();
        if let Some(i) = added.iter().position(|u| *u == uuid) {
            return Err(i + 1);
        }
        added.push(uuid);
    }
    if !target.contains("/metadata:1") {
        return Ok(body.to_vec());
    }
    for list in ["Attribute", "Object", "EventReport", "ShadowAttribute"] {
        doc.event.remove(list);
    }
    Ok(serde_json::to_vec(&doc).unwrap())
}

/// A free TCP port on `ip` (bound then released).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The gateway binary running with `args`; SIGTERM and reaped on drop.
pub struct Gateway {
    pub child: Child,
    pub log: PathBuf,
}

impl Gateway {
    pub fn start(args: &[&str], log: PathBuf) -> Gateway {
        Gateway::start_wrapped(&[], args, log)
    }

    /// Starts the gateway behind a command prefix (e.g. `ip netns exec NS`,
    /// or none) and waits until it logs that every listener is bound.
    pub fn start_wrapped(prefix: &[&str], args: &[&str], log: PathBuf) -> Gateway {
        let err = std::fs::File::create(&log).unwrap();
        let bin = env!("CARGO_BIN_EXE_misp-guard-gw");
        let (program, rest) = prefix
            .split_first()
            .map_or((bin, &[][..]), |(p, r)| (*p, r));
        let mut cmd = Command::new(program);
        cmd.args(rest);
        if !prefix.is_empty() {
            cmd.arg(bin);
        }
        let child = cmd
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let mut g = Gateway { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !g.logs().contains(" ready") {
            if let Ok(Some(st)) = g.child.try_wait() {
                panic!("gateway exited ({st}): {}", g.logs());
            }
            assert!(Instant::now() < deadline, "gateway not ready: {}", g.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        g
    }

    /// `run --config CFG --explicit PROXY [EXTRA...]`: the loopback
    /// tests' usual gateway, an explicit proxy on `proxy`.
    pub fn explicit(cfg: &Path, proxy: SocketAddr, extra: &[&str], log: PathBuf) -> Gateway {
        let proxy = proxy.to_string();
        let mut args = vec![
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--explicit",
            &proxy,
        ];
        args.extend_from_slice(extra);
        Gateway::start(&args, log)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (bounded wait).
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP response as the client saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// Reads one response for a request with `method`.
pub async fn read_answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: &mut HttpIo<S>,
    method: &str,
) -> Option<Answer> {
    let head = io.read_response_head(65536).await.ok()?;
    let framing = response_framing(method, &head).ok()?;
    let body = io.read_body(framing, 1 << 30).await.ok()?;
    Some(Answer {
        status: head.status,
        headers: head.headers,
        body,
    })
}

/// A TLS client config trusting only `ca_file`.
pub fn client_config(ca_file: &Path) -> Arc<rustls::ClientConfig> {
    tls::build_client_config(&UpstreamTlsOptions {
        extra_ca_pem: Some(ca_file.to_path_buf()),
        pin_sha256: None,
        insecure: false,
        use_system_roots: false,
    })
    .unwrap()
}

/// Opens a CONNECT tunnel through the explicit proxy at `proxy` to
/// `host:port` and completes TLS trusting `ca_file`. Err(status) if the
/// CONNECT is refused.
pub async fn connect_tunnel(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    ca_file: &Path,
) -> Result<HttpIo<tokio_rustls::client::TlsStream<TcpStream>>, u16> {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(
        format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(b[0]);
    }
    let status: u16 = String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status != 200 {
        return Err(status);
    }
    let tls = tls::connect(client_config(ca_file), host, tcp, Duration::from_secs(5))
        .await
        .map_err(|_| 0u16)?;
    Ok(HttpIo::new(tls))
}
