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
        &["run", "--config", setup.cfg.to_str().unwrap()],
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
