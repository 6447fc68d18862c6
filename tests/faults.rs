//! Upstream and client faults through the real binary on loopback (explicit
//! proxy, plain HTTP on both legs): an upstream that refuses, resets in the
//! middle of the request or the response, answers garbage or an endless
//! head, or stalls before or during its answer; a client that goes away in
//! the middle of an upload or a download; an allowlisted host without an
//! address. Each must end in a 502/504 answer or a clean close, with a log
//! line naming the fault; afterwards the gateway holds no more descriptors
//! than before and still serves a normal sync request.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const UUID: &str = "385283a1-b5e0-4e10-a532-dce11c365a56";

/// How the fault upstream treats the next connections.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// A valid answer: the event for a pull, `{}` otherwise.
    Normal,
    /// Reads 1 KiB of the request, then resets.
    ResetMidRequest,
    /// Reads the request, sends part of a declared body, then resets.
    ResetMidResponse,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Sends a response head that never ends.
    EndlessHead,
    /// Reads the request and says nothing for longer than the gateway waits.
    StallBeforeResponse,
    /// Sends the head and part of the body, then says nothing.
    StallMidResponse,
    /// Streams a large body for as long as someone reads it.
    Endless,
}

fn event() -> Vec<u8> {
    json!({"Event": {"uuid": UUID, "info": "faults", "distribution": "1", "Tag": [{"name": "tlp:green"}],
        "Attribute": [], "Object": []}})
    .to_string()
    .into_bytes()
}

/// Closes with a TCP reset rather than a FIN.
fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

fn serve_one(mut s: TcpStream, mode: Mode) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    if mode == Mode::ResetMidRequest {
        let mut buf = [0u8; 1024];
        let _ = s.read_exact(&mut buf);
        return reset(s);
    }
    // Keep-alive: answer requests until the gateway closes.
    while let Some(len) = support::counting::read_head(&mut s) {
        let mut body = vec![0u8; len];
        if s.read_exact(&mut body).is_err() {
            return;
        }
        let head = |len: usize| {
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n")
        };
        match mode {
            Mode::Normal => {
                let ev = event();
                let _ = s.write_all(head(ev.len()).as_bytes());
                let _ = s.write_all(&ev);
            }
            Mode::ResetMidResponse => {
                let _ = s.write_all(head(100_000).as_bytes());
                let _ = s.write_all(&[b' '; 1000]);
                std::thread::sleep(Duration::from_millis(100));
                return reset(s);
            }
            Mode::Garbage => {
                let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02\r\n\r\n");
                return;
            }
            Mode::EndlessHead => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
                let line = format!("X-Pad: {}\r\n", "a".repeat(1000));
                // Bounded: far beyond any head limit, then stop.
                for _ in 0..2000 {
                    if s.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                }
                return;
            }
            Mode::StallBeforeResponse => {
                std::thread::sleep(Duration::from_secs(5));
                return;
            }
            Mode::StallMidResponse => {
                let _ = s.write_all(head(100_000).as_bytes());
                let _ = s.write_all(&[b' '; 100]);
                std::thread::sleep(Duration::from_secs(5));
                return;
            }
            Mode::Endless => {
                let _ = s.write_all(head(1 << 30).as_bytes());
                let chunk = vec![b'x'; 64 * 1024];
                // Bounded: 1 GiB at most; ends when the reader is gone.
                for _ in 0..(1 << 14) {
                    if s.write_all(&chunk).is_err() {
                        return;
                    }
                }
                return;
            }
            Mode::ResetMidRequest => unreachable!(),
        }
    }
}

/// The fault upstream: each accepted connection is served in the current mode.
fn fault_upstream(mode: Arc<Mutex<Mode>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            let m = *mode.lock().unwrap();
            std::thread::spawn(move || serve_one(s, m));
        }
    });
    addr
}

/// What the client saw: the status (0: none) and whether the connection
/// then closed.
#[derive(Debug)]
struct Seen {
    status: u16,
    /// Shown in failure messages.
    #[allow(dead_code)]
    head: String,
    closed: bool,
}

/// Reads an answer's head, then up to `drain` bytes until the gateway closes.
fn read_answer_raw(c: &mut TcpStream, drain: usize) -> Seen {
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => {
                return Seen {
                    status: 0,
                    head: String::from_utf8_lossy(&head).into(),
                    closed: true,
                }
            }
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut left = drain;
    let mut buf = vec![0u8; 64 * 1024];
    let closed = loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break true,
            Ok(n) if n >= left => break false,
            Ok(n) => left -= n,
        }
    };
    Seen {
        status,
        head,
        closed,
    }
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

struct Rig {
    gw: Gateway,
    proxy: SocketAddr,
    upstream: SocketAddr,
    dead_port: u16,
    mode: Arc<Mutex<Mode>>,
    _dir: TempDir,
}

impl Rig {
    fn start() -> Rig {
        let dir = TempDir::new("faults");
        let mode = Arc::new(Mutex::new(Mode::Normal));
        let upstream = fault_upstream(mode.clone());
        gateway_ca(&dir.0.join("ca"));
        let dead_port = free_port("127.0.0.4");
        let gw_port = free_port("127.0.0.1");
        let config = json!({
            // An allowlisted name that has no address (.invalid never resolves).
            "allowlist": {"urls": [], "domains": ["nowhere.invalid"]},
            "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
            "instances": {
                "a": instance_json("127.0.0.1", "a.test", 443, "c1"),
                "b": instance_json("127.0.0.2", "b.test", upstream.port(), "c2"),
                "d": instance_json("127.0.0.4", "d.test", dead_port, "c2"),
            },
            "gateway": {"tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key",
                                // Plain HTTP upstream here; TLS needs some anchor to load.
                                "upstream_ca": "ca/ca.crt", "use_system_roots": false},
                        // Pooling off: each fault is set for the upstream's
                        // next *connection*, which a pooled one from an
                        // earlier step would skip (reuse: tests/upstream_pool.rs).
                        "timeouts": {"upstream_connect_secs": 3, "upstream_response_secs": 2, "body_secs": 2,
                                     "upstream_idle_secs": 0}}
        });
        let cfg = dir.0.join("config.json");
        std::fs::write(&cfg, config.to_string()).unwrap();
        let proxy: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
        let gw = Gateway::explicit(&cfg, proxy, &[], dir.0.join("gw.log"));
        Rig {
            gw,
            proxy,
            upstream,
            dead_port,
            mode,
            _dir: dir,
        }
    }

    fn client(&self) -> TcpStream {
        let c = TcpStream::connect(self.proxy).unwrap();
        c.set_nodelay(true).unwrap();
        c
    }

    /// An absolute-form request head to `host` (port of `b` unless given).
    fn head(
        &self,
        method: &str,
        host: &str,
        port: u16,
        path: &str,
        body_len: Option<usize>,
    ) -> Vec<u8> {
        support::counting::request_head(method, host, port, path, body_len)
    }

    fn pull(&self) -> Seen {
        let mut c = self.client();
        let path = format!("/events/view/{UUID}");
        c.write_all(&self.head("GET", "b.test", self.upstream.port(), &path, None))
            .unwrap();
        read_answer_raw(&mut c, usize::MAX)
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    /// The new part of the gateway's log since `from` bytes.
    fn log_since(&self, from: usize) -> String {
        self.gw.logs().get(from..).unwrap_or_default().to_string()
    }
}

/// Runs one fault; checks the answer and the log line it must leave.
fn expect(rig: &Rig, name: &str, seen: Seen, statuses: &[u16], log_from: usize, log_phrase: &str) {
    // The log line is written before the answer; allow the writer a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rig.log_since(log_from).contains(log_phrase) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = rig.log_since(log_from);
    assert!(
        statuses.contains(&seen.status),
        "{name}: expected one of {statuses:?}, got {seen:?}\nlog: {log}"
    );
    assert!(seen.closed, "{name}: connection left open: {seen:?}");
    assert!(
        log.contains(log_phrase),
        "{name}: no log line with {log_phrase:?}:\n{log}"
    );
}

#[test]
fn upstream_and_client_faults_end_cleanly_without_leaks() {
    let rig = Rig::start();
    let pid = rig.gw.child.id();

    // Baseline after a normal exchange (lazily opened files are open).
    let ok = rig.pull();
    assert_eq!(ok.status, 200, "{ok:?}\n{}", rig.gw.logs());
    std::thread::sleep(Duration::from_millis(300));
    let fds_before = fd_count(pid);
    assert!(fds_before > 0);

    // Upstream refuses the connection.
    let from = rig.gw.logs().len();
    let mut c = rig.client();
    c.write_all(&rig.head(
        "GET",
        "d.test",
        rig.dead_port,
        &format!("/events/view/{UUID}"),
        None,
    ))
    .unwrap();
    let seen = read_answer_raw(&mut c, usize::MAX);
    expect(&rig, "refused", seen, &[502], from, "upstream d.test");

    // An allowlisted host without an address.
    let from = rig.gw.logs().len();
    let mut c = rig.client();
    c.write_all(&rig.head("GET", "nowhere.invalid", 80, "/", None))
        .unwrap();
    let seen = read_answer_raw(&mut c, usize::MAX);
    expect(
        &rig,
        "no address",
        seen,
        &[502, 504],
        from,
        "nowhere.invalid",
    );

    // Upstream resets in the middle of a (streamed, 4 MB) upload.
    rig.set(Mode::ResetMidRequest);
    let from = rig.gw.logs().len();
    let mut c = rig.client();
    let path = format!("/sightings/bulkSaveSightings/{UUID}");
    let len = 4 << 20;
    c.write_all(&rig.head("POST", "b.test", rig.upstream.port(), &path, Some(len)))
        .unwrap();
    let body = vec![b' '; len];
    // The gateway may answer and close before taking it all.
    let _ = c.write_all(&body);
    let seen = read_answer_raw(&mut c, usize::MAX);
    expect(&rig, "reset mid-request", seen, &[502], from, "failed");

    // Upstream resets in the middle of an inspected answer (a pull).
    rig.set(Mode::ResetMidResponse);
    let from = rig.gw.logs().len();
    let seen = rig.pull();
    expect(
        &rig,
        "reset mid-response (inspected)",
        seen,
        &[502],
        from,
        "upstream response body",
    );

    // ... and of a streamed one: the client sees the connection closed,
    // with the head and a short body if they were already relayed.
    let from = rig.gw.logs().len();
    let mut c = rig.client();
    c.write_all(&rig.head(
        "GET",
        "b.test",
        rig.upstream.port(),
        "/servers/getVersion",
        None,
    ))
    .unwrap();
    let seen = read_answer_raw(&mut c, usize::MAX);
    expect(
        &rig,
        "reset mid-response (streamed)",
        seen,
        &[0, 200],
        from,
        "streaming response failed",
    );

    // Garbage instead of a response head.
    rig.set(Mode::Garbage);
    let from = rig.gw.logs().len();
    let seen = rig.pull();
    expect(&rig, "garbage", seen, &[502], from, "upstream response");

    // A response head that never ends.
    rig.set(Mode::EndlessHead);
    let from = rig.gw.logs().len();
    let seen = rig.pull();
    expect(
        &rig,
        "endless head",
        seen,
        &[502],
        from,
        "upstream response",
    );

    // Silence before the response (upstream_response_secs = 2).
    rig.set(Mode::StallBeforeResponse);
    let from = rig.gw.logs().len();
    let t0 = Instant::now();
    let seen = rig.pull();
    expect(
        &rig,
        "stall before response",
        seen,
        &[504],
        from,
        "timed out",
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // Silence in the middle of an inspected body (body_secs = 2).
    rig.set(Mode::StallMidResponse);
    let from = rig.gw.logs().len();
    let seen = rig.pull();
    expect(
        &rig,
        "stall mid-response",
        seen,
        &[504],
        from,
        "upstream response body",
    );

    // The client goes away in the middle of an inspected upload: the
    // gateway logs the cut-short body and sends nothing upstream.
    rig.set(Mode::Normal);
    let from = rig.gw.logs().len();
    let mut c = rig.client();
    c.write_all(&rig.head(
        "POST",
        "b.test",
        rig.upstream.port(),
        "/events/add",
        Some(1 << 20),
    ))
    .unwrap();
    c.write_all(&[b' '; 1000]).unwrap();
    c.shutdown(Shutdown::Both).unwrap();
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rig.log_since(from).contains("/events/add") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        rig.log_since(from).contains("/events/add"),
        "mid-upload: {}",
        rig.log_since(from)
    );

    // The client goes away in the middle of a (streamed) download.
    rig.set(Mode::Endless);
    let from = rig.gw.logs().len();
    let mut c = rig.client();
    c.write_all(&rig.head(
        "GET",
        "b.test",
        rig.upstream.port(),
        "/servers/getVersion",
        None,
    ))
    .unwrap();
    let seen = read_answer_raw(&mut c, 1 << 20);
    assert_eq!(seen.status, 200, "{seen:?}");
    reset(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig.log_since(from).contains("streaming response failed") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        rig.log_since(from).contains("streaming response failed"),
        "mid-download: {}",
        rig.log_since(from)
    );

    // Still serving, and every descriptor of the faulty exchanges released.
    rig.set(Mode::Normal);
    let ok = rig.pull();
    assert_eq!(ok.status, 200, "{ok:?}\n{}", rig.gw.logs());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds_after = fd_count(pid);
    while fds_after > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        fds_after = fd_count(pid);
    }
    assert!(
        fds_after <= fds_before,
        "descriptors: {fds_before} before the faults, {fds_after} after"
    );
    eprintln!("faults: gateway descriptors {fds_before} before, {fds_after} after");
}
