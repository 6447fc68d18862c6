//! Upstream connections reused across client connections (loopback, no
//! root): the real binary as an explicit proxy, TLS both legs, an upstream
//! that counts the TCP connections it accepted and can close idle ones.
//! Client connections one after the other share one upstream connection;
//! a reload starts over with a new one; a connection the server closed
//! while idle is noticed and replaced, and the request still succeeds.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use misp_guard_gw::http::io::HttpIo;
use serde_json::json;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const GET: &[u8] =
    b"GET /servers/getVersion HTTP/1.1\r\nHost: b.test\r\nAccept: application/json\r\n\r\n";

/// What the upstream did.
#[derive(Default)]
struct Upstream {
    /// TCP connections accepted.
    accepted: AtomicUsize,
    /// Requests answered.
    answered: AtomicUsize,
    /// Close a connection idle this many ms between requests (0: never).
    idle_close_ms: AtomicU64,
}

/// An HTTPS upstream for `b.test` answering every request `200 {}` with
/// keep-alive; its CA is written to `ca_file`.
async fn upstream(ca_file: &Path) -> (SocketAddr, Arc<Upstream>) {
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = server_tls(addr, "b.test", ca_file);
    let state = Arc::new(Upstream::default());
    let s = state.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            s.accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            let s = s.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut io = HttpIo::new(tls);
                loop {
                    let idle = match s.idle_close_ms.load(Ordering::SeqCst) {
                        0 => Duration::from_secs(3600),
                        ms => Duration::from_millis(ms),
                    };
                    let head = tokio::time::timeout(idle, io.read_request_head(65536)).await;
                    let Ok(Ok(Some(_))) = head else {
                        // Idle too long (as Apache's KeepAliveTimeout), or
                        // the gateway closed: close_notify and FIN.
                        let _ = io.io.shutdown().await;
                        return;
                    };
                    s.answered.fetch_add(1, Ordering::SeqCst);
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                    if io.io.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, state)
}

/// One request on a new client connection through the proxy; its status.
/// The client connection is closed afterwards.
async fn one_request(proxy: SocketAddr, port: u16, ca: &Path) -> u16 {
    let mut c = connect_tunnel(proxy, "b.test", port, ca)
        .await
        .expect("tunnel");
    c.write_all(GET).await.unwrap();
    let status = read_answer(&mut c, "GET").await.map_or(0, |a| a.status);
    let _ = c.io.shutdown().await;
    status
}

/// `name{labels} value` from the gateway's /metrics (0 when absent).
async fn metric(ops: SocketAddr, sample: &str) -> f64 {
    use tokio::io::AsyncReadExt;
    let mut tcp = tokio::net::TcpStream::connect(ops).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(all).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (bounded) until `sample` reads `want`.
async fn wait_metric(ops: SocketAddr, sample: &str, want: f64, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = metric(ops, sample).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sample} is {got}, want {want}: {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_share_idle_upstream_connections() {
    let dir = TempDir::new("pool");
    let (server, up) = upstream(&dir.0.join("server-ca.crt")).await;
    gateway_ca(&dir.0.join("ca"));
    let config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
        "instances": {
            "a": instance_json("127.0.0.1", "a.test", 443, "c1"),
            "b": instance_json("127.0.0.2", "b.test", server.port(), "c2"),
        },
        "gateway": {"tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "upstream_ca": "server-ca.crt", "use_system_roots": false},
                    // Long enough that nothing expires by itself here.
                    "timeouts": {"upstream_idle_secs": 60},
                    "watch_config": false}
    });
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let ops: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let ops_flag = ops.to_string();
    let gw = Gateway::explicit(&cfg, proxy, &["--metrics", &ops_flag], dir.0.join("gw.log"));
    let ca = dir.0.join("ca/ca.crt");
    let logs = || gw.logs();
    let idle = "misp_guard_gw_upstream_pool_idle";
    let kind = |k: &str| format!("misp_guard_gw_upstream_connections_total{{kind=\"{k}\"}}");

    // 1. Three client connections one after the other: one upstream
    //    connection. Each is given back when its client connection ends.
    for round in 1..=3 {
        assert_eq!(
            one_request(proxy, server.port(), &ca).await,
            200,
            "{}",
            gw.logs()
        );
        wait_metric(ops, idle, 1.0, logs).await;
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1, "round {round}");
    }
    assert_eq!(up.answered.load(Ordering::SeqCst), 3);
    assert_eq!(metric(ops, &kind("opened")).await, 1.0);
    assert_eq!(metric(ops, &kind("pooled")).await, 2.0);

    // 2. Two at once: the second cannot share the first's connection and
    //    opens its own; both go back to the pool.
    let (a, b) = tokio::join!(
        connect_tunnel(proxy, "b.test", server.port(), &ca),
        connect_tunnel(proxy, "b.test", server.port(), &ca)
    );
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    a.write_all(GET).await.unwrap();
    assert_eq!(read_answer(&mut a, "GET").await.unwrap().status, 200);
    b.write_all(GET).await.unwrap();
    assert_eq!(read_answer(&mut b, "GET").await.unwrap().status, 200);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    drop((a, b));
    wait_metric(ops, idle, 2.0, logs).await;

    // 3. A reload (same file: still a new snapshot) closes the idle
    //    connections; the next request opens a new one.
    std::process::Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap();
    wait_metric(ops, "misp_guard_gw_reloads_total{result=\"ok\"}", 1.0, logs).await;
    wait_metric(ops, idle, 0.0, logs).await;
    assert_eq!(one_request(proxy, server.port(), &ca).await, 200);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
    wait_metric(ops, idle, 1.0, logs).await;

    // 4. The server closes connections idle for 200 ms (as Apache does
    //    after its KeepAliveTimeout). The pooled one is found closed before
    //    use, dropped, and the request goes out on a new connection.
    up.idle_close_ms.store(200, Ordering::SeqCst);
    // The pooled connection's server side is already waiting with the old
    // setting: one request wakes it up with the new one.
    assert_eq!(one_request(proxy, server.port(), &ca).await, 200);
    wait_metric(ops, idle, 1.0, logs).await;
    let accepted = up.accepted.load(Ordering::SeqCst);
    let answered = up.answered.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        one_request(proxy, server.port(), &ca).await,
        200,
        "{}",
        gw.logs()
    );
    assert_eq!(up.accepted.load(Ordering::SeqCst), accepted + 1);
    assert_eq!(up.answered.load(Ordering::SeqCst), answered + 1);
    assert_eq!(metric(ops, &kind("stale")).await, 1.0);
    assert!(
        !gw.logs().contains("forwarding request failed"),
        "{}",
        gw.logs()
    );
}
