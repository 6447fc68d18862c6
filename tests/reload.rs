//! SIGHUP applies everything or nothing (loopback, no root): a reload that
//! adds a listener binds it and requests through it work; one that removes
//! a listener closes it while a connection it had accepted carries on; one
//! whose new listener cannot be bound (port taken) keeps the old policy and
//! the old listeners and logs why.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const GET: &[u8] =
    b"GET /servers/getVersion HTTP/1.1\r\nHost: b.test\r\nAccept: application/json\r\n\r\n";

struct Setup {
    cfg: std::path::PathBuf,
    ca: std::path::PathBuf,
    server_port: u16,
}

impl Setup {
    /// The config with these explicit listeners; `b_compartment` decides
    /// whether a (c1) may reach b (c2: yes, c3: no).
    fn write(&self, listeners: &[SocketAddr], b_compartment: &str) {
        let listeners: Vec<_> = listeners
            .iter()
            .map(|a| json!({"mode": "explicit", "listen": a.to_string()}))
            .collect();
        let config = json!({
            "allowlist": {"urls": [], "domains": []},
            "compartments_rules": {"can_reach": {"c1": ["c1", "c2"], "c2": ["c2"], "c3": ["c3"]}},
            "instances": {
                "a": instance_json("127.0.0.1", "a.test", 443, "c1"),
                "b": instance_json("127.0.0.2", "b.test", self.server_port, b_compartment),
            },
            "gateway": {
                "listeners": listeners,
                "tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key",
                        "upstream_ca": "server-ca.crt", "use_system_roots": false}
            }
        });
        std::fs::write(&self.cfg, config.to_string()).unwrap();
    }
}

/// Sends SIGHUP and waits for the reload's outcome line (`needle`) to
/// appear once more than before.
fn hup_and_wait(gw: &Gateway, needle: &str) {
    let before = gw.logs().matches(needle).count();
    std::process::Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.logs().matches(needle).count() == before {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} after SIGHUP: {}",
            gw.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Status of `GET /servers/getVersion` to b through the proxy at `proxy`
/// (the CONNECT's status when it is refused).
async fn get_version(proxy: SocketAddr, server_port: u16, ca: &Path) -> u16 {
    match connect_tunnel(proxy, "b.test", server_port, ca).await {
        Ok(mut c) => {
            c.write_all(GET).await.unwrap();
            read_answer(&mut c, "GET").await.map_or(0, |a| a.status)
        }
        Err(status) => status,
    }
}

fn refuses_connections(addr: SocketAddr) -> bool {
    matches!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_listeners_all_or_nothing() {
    let dir = TempDir::new("reload");
    let (server, _received) = misp_upstream(
        "127.0.0.2:0".parse().unwrap(),
        "b.test",
        &dir.0.join("server-ca.crt"),
        Arc::new(Mutex::new(b"{}".to_vec())),
    )
    .await;
    gateway_ca(&dir.0.join("ca"));
    let setup = Setup {
        cfg: dir.0.join("config.json"),
        ca: dir.0.join("ca/ca.crt"),
        server_port: server.port(),
    };
    let at = |port: u16| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
    let (first, second) = (at(free_port("127.0.0.1")), at(free_port("127.0.0.1")));
    setup.write(&[first], "c2");
    let gw = Gateway::start(
        &[
            "run",
            "--config",
            setup.cfg.to_str().unwrap(),
            // SIGHUP alone decides when each step is applied.
            "--no-watch-config",
        ],
        dir.0.join("gw.log"),
    );
    assert_eq!(
        get_version(first, server.port(), &setup.ca).await,
        200,
        "{}",
        gw.logs()
    );
    assert!(refuses_connections(second));

    // 1. A new listener is bound and serves.
    setup.write(&[first, second], "c2");
    hup_and_wait(&gw, "policy reloaded");
    assert_eq!(
        get_version(second, server.port(), &setup.ca).await,
        200,
        "{}",
        gw.logs()
    );
    assert_eq!(
        get_version(first, server.port(), &setup.ca).await,
        200,
        "{}",
        gw.logs()
    );

    // 2. A removed listener is closed; a connection it had accepted (a
    //    tunnel opened before the reload) still completes its request.
    let mut open = connect_tunnel(first, "b.test", server.port(), &setup.ca)
        .await
        .expect("tunnel before removal");
    setup.write(&[second], "c2");
    hup_and_wait(&gw, "policy reloaded");
    assert!(refuses_connections(first), "{}", gw.logs());
    open.write_all(GET).await.unwrap();
    assert_eq!(
        read_answer(&mut open, "GET").await.map(|a| a.status),
        Some(200),
        "in-flight connection on a removed listener: {}",
        gw.logs()
    );
    assert!(gw
        .logs()
        .contains(&format!("stopped listening on {first} (explicit)")));
    assert_eq!(
        get_version(second, server.port(), &setup.ca).await,
        200,
        "{}",
        gw.logs()
    );

    // 3. A listener that cannot be bound (the port is taken) fails the
    //    whole reload: the policy change (b unreachable) is not applied,
    //    the running listener stays, the removed one stays closed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    setup.write(&[first, taken_addr], "c3");
    hup_and_wait(&gw, "reload failed");
    let logs = gw.logs();
    assert!(
        logs.contains(&format!(
            "reload failed, keeping the running policy and listeners: bind for listener {taken_addr}: "
        )),
        "{logs}"
    );
    assert_eq!(
        get_version(second, server.port(), &setup.ca).await,
        200,
        "old policy and listener must stay: {}",
        gw.logs()
    );
    assert!(refuses_connections(first), "{}", gw.logs());
    drop(taken);

    // 4. The same change once the port is free: applied as a whole.
    setup.write(&[first, taken_addr], "c3");
    hup_and_wait(&gw, "policy reloaded");
    assert!(refuses_connections(second), "{}", gw.logs());
    assert_eq!(
        get_version(first, server.port(), &setup.ca).await,
        403,
        "{}",
        gw.logs()
    );
    assert_eq!(
        get_version(taken_addr, server.port(), &setup.ca).await,
        403,
        "{}",
        gw.logs()
    );
}

/// Writes `text` as configuration management does: a new file renamed
/// over the old one.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An event push of `uuid` tagged `tag`, padded with attributes so that it
/// is sent in two halves with a reload in between.
fn push_request(uuid: &str, tag: &str) -> (Vec<u8>, Vec<u8>) {
    let attributes: Vec<_> = (0..2000)
        .map(|i| {
            json!({"type": "domain", "category": "Network activity",
            "value": format!("host-{i}.example"), "distribution": "5"})
        })
        .collect();
    let body = json!({"Event": {"uuid": uuid, "info": "in flight", "distribution": "1",
        "Tag": [{"name": tag}], "Attribute": attributes, "Object": []}})
    .to_string();
    let mut r = format!(
        "POST /events/add/metadata:1 HTTP/1.1\r\nHost: b.test\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    let rest = r.split_off(r.len() / 2);
    (r, rest)
}

type Tunnel =
    misp_guard_gw::http::io::HttpIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Opens a tunnel to b and sends the first half of a push.
async fn begin_push(
    proxy: SocketAddr,
    server_port: u16,
    ca: &Path,
    uuid: &str,
) -> (Tunnel, Vec<u8>) {
    let mut c = connect_tunnel(proxy, "b.test", server_port, ca)
        .await
        .expect("tunnel to b");
    let (first, rest) = push_request(uuid, "tlp:amber");
    c.write_all(&first).await.unwrap();
    (c, rest)
}

/// Sends the rest; the status of the answer.
async fn finish_push(mut c: Tunnel, rest: Vec<u8>) -> u16 {
    c.write_all(&rest).await.unwrap();
    read_answer(&mut c, "POST").await.map_or(0, |a| a.status)
}

fn delivered(received: &Log, uuid: &str) -> bool {
    received
        .lock()
        .unwrap()
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains(uuid))
}

/// Waits (bounded) until `needle` is in the log `n` times.
fn wait_count(gw: &Gateway, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.logs().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "not {n}x {needle:?}: {}",
            gw.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A reload — by SIGHUP or by a change of the watched file, good or
/// broken — never changes the policy under an upload already in flight:
/// the exchange finishes under the policy it started with, and the next one
/// is decided by the new policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_flight_finishes_under_the_policy_it_started_with() {
    let dir = TempDir::new("inflight");
    let (server, received) = misp_upstream(
        "127.0.0.2:0".parse().unwrap(),
        "b.test",
        &dir.0.join("server-ca.crt"),
        Arc::new(Mutex::new(b"{}".to_vec())),
    )
    .await;
    gateway_ca(&dir.0.join("ca"));
    let ca = dir.0.join("ca/ca.crt");
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let cfg = dir.0.join("config.json");
    // a's pushes may not carry `blocked`.
    let policy = |blocked: &[&str]| {
        let mut a = instance_json("127.0.0.1", "a.test", 443, "c1");
        a["taxonomies_rules"]["blocked_tags"] = json!(blocked);
        json!({
            "allowlist": {"urls": [], "domains": []},
            "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
            "instances": {"a": a, "b": instance_json("127.0.0.2", "b.test", server.port(), "c2")},
            "gateway": {"tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key",
                                "upstream_ca": "server-ca.crt", "use_system_roots": false}}
        })
        .to_string()
    };
    let lenient = policy(&["tlp:red"]);
    let strict = policy(&["tlp:red", "tlp:amber"]);
    replace_file(&cfg, &lenient);
    // The file is watched by default: no flag.
    let gw = Gateway::explicit(&cfg, proxy, &[], dir.0.join("gw.log"));
    let port = server.port();
    const U: [&str; 5] = [
        "7a1e0001-0000-4000-8000-000000000001",
        "7a1e0001-0000-4000-8000-000000000002",
        "7a1e0001-0000-4000-8000-000000000003",
        "7a1e0001-0000-4000-8000-000000000004",
        "7a1e0001-0000-4000-8000-000000000005",
    ];

    // 1. SIGHUP to the strict policy while an amber push is half sent: it
    //    is delivered; the next amber push is refused.
    let (c, rest) = begin_push(proxy, port, &ca, U[0]).await;
    replace_file(&cfg, &strict);
    hup_and_wait(&gw, "policy reloaded");
    assert_eq!(finish_push(c, rest).await, 200, "{}", gw.logs());
    assert!(delivered(&received, U[0]));
    let (c, rest) = begin_push(proxy, port, &ca, U[1]).await;
    assert_eq!(finish_push(c, rest).await, 403, "{}", gw.logs());
    assert!(!delivered(&received, U[1]));

    // 2. Back to the lenient policy by a change of the file alone, while
    //    an amber push begun under the strict one is in flight: refused.
    let reloads = gw.logs().matches("policy reloaded").count();
    let (c, rest) = begin_push(proxy, port, &ca, U[2]).await;
    replace_file(&cfg, &lenient);
    wait_count(&gw, "policy reloaded", reloads + 1);
    assert!(gw.logs().contains("changed: reloading"), "{}", gw.logs());
    assert_eq!(finish_push(c, rest).await, 403, "{}", gw.logs());
    assert!(!delivered(&received, U[2]));

    // 3. A broken file, seen by the watcher and then sent a SIGHUP, while
    //    an amber push is in flight: both reloads fail, the push is
    //    delivered, and so is the next one (the lenient policy stays).
    let (c, rest) = begin_push(proxy, port, &ca, U[3]).await;
    replace_file(&cfg, "{\"allowlist\": ");
    wait_count(&gw, "reload failed", 1);
    hup_and_wait(&gw, "reload failed");
    assert_eq!(finish_push(c, rest).await, 200, "{}", gw.logs());
    assert!(delivered(&received, U[3]));
    let (c, rest) = begin_push(proxy, port, &ca, U[4]).await;
    assert_eq!(finish_push(c, rest).await, 200, "{}", gw.logs());
    assert!(delivered(&received, U[4]));
    // The watcher reported the broken content once, not every second.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        gw.logs().matches("changed: reloading").count(),
        2,
        "{}",
        gw.logs()
    );
}
