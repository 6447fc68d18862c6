//! The systemd contract without systemd: `NOTIFY_SOCKET` points at a
//! datagram socket this test owns. READY=1 only once the listener accepts;
//! WATCHDOG=1 keep-alives; SIGHUP with a valid config swaps the policy, with
//! a broken one keeps the old policy and says why; SIGTERM says STOPPING=1
//! and exits 0.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{free_port, TempDir};

fn config(b_compartment: &str, proxy_port: u16) -> String {
    let inst = |ip: &str, host: &str, comp: &str| {
        json!({"ip": ip, "host": host, "port": 443, "compartment_id": comp, "affiliation": "",
            "taxonomies_rules": {}, "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
            "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []})
    };
    json!({
        "allowlist": {}, "compartments_rules": {"can_reach": {"c1": ["c1", "c2"], "c2": ["c2"], "c3": ["c3"]}},
        "instances": {"a": inst("127.0.0.1", "a.test", "c1"), "b": inst("127.0.0.2", "b.test", b_compartment)},
        "gateway": {"listeners": [{"mode": "explicit", "listen": format!("127.0.0.1:{proxy_port}")}]}
    })
    .to_string()
}

/// Messages received within `wait`, until one contains `until`.
fn recv_until(sock: &UnixDatagram, until: &str, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = m.contains(until);
            got.push(m);
            if done {
                return got;
            }
        }
    }
    panic!("no {until:?} within {wait:?}; got {got:?}");
}

/// Status code the explicit proxy answers a CONNECT to b.test:443 with.
fn connect_status(proxy: u16) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn notify_ready_watchdog_reload_and_stop() {
    let dir = TempDir::new("service");
    let sock_path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let port = free_port("127.0.0.1");
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config("c2", port)).unwrap();
    let log = dir.0.join("gw.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_misp-guard-gw"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let first = recv_until(&sock, "READY=1", Duration::from_secs(10));
    // READY=1 means the listener already accepts.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok(), "{first:?}");
    assert!(
        first.last().unwrap().contains("STATUS=2 instances"),
        "{first:?}"
    );
    assert_eq!(connect_status(port), 200, "{}", logs());
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(2));

    // A valid new policy: b moves to a compartment a cannot reach.
    std::fs::write(&cfg, config("c3", port)).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let msgs = recv_until(&sock, "STATUS=reloaded", Duration::from_secs(5));
    assert!(msgs.iter().any(|m| m.contains("RELOADING=1")), "{msgs:?}");
    assert_eq!(connect_status(port), 403, "{}", logs());

    // A broken file keeps the running policy and says why.
    std::fs::write(&cfg, "{\"allowlist\": ").unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let msgs = recv_until(&sock, "STATUS=reload failed", Duration::from_secs(5));
    assert!(msgs.last().unwrap().contains("READY=1"), "{msgs:?}");
    assert_eq!(
        connect_status(port),
        403,
        "old policy must stay: {}",
        logs()
    );
    assert!(
        logs().contains("reload failed, keeping the running policy"),
        "{}",
        logs()
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    recv_until(&sock, "STOPPING=1", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "did not exit: {}", logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", logs());
}
