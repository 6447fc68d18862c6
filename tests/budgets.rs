//! Connection budget through the binary on loopback: connections over
//! `gateway.limits.max_connections_per_client` or `max_connections` are
//! closed on accept with a log line, the admitted ones are served, and a
//! closed connection gives its place back.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    s.bind(&local.into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Was the connection closed by the gateway without a byte?
fn closed_at_once(mut s: TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// Does the gateway answer a request on this connection?
fn served(mut s: TcpStream) -> bool {
    if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut b = [0u8; 9];
    s.read_exact(&mut b).is_ok() && &b == b"HTTP/1.1 "
}

#[test]
fn connections_over_budget_are_closed_and_places_come_back() {
    let dir = TempDir::new("budgets");
    gateway_ca(&dir.0.join("ca"));
    let port = free_port("127.0.0.1");
    let config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c1"]}},
        "instances": {"a": instance_json("127.0.0.1", "a.test", 443, "c1")},
        "gateway": {"tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key",
                            "upstream_ca": "ca/ca.crt", "use_system_roots": false},
                    "limits": {"max_connections": 5, "max_connections_per_client": 3}}
    });
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let gw = Gateway::start(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--explicit",
            &proxy.to_string(),
        ],
        dir.0.join("gw.log"),
    );

    // Three idle connections from one address are admitted; a fourth is not.
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.1", proxy)).collect();
    // Let the gateway accept them before the next one.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        closed_at_once(connect_from("127.0.0.1", proxy)),
        "{}",
        gw.logs()
    );
    // Another address still gets in, up to the total of five.
    held.push(connect_from("127.0.0.3", proxy));
    held.push(connect_from("127.0.0.3", proxy));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        closed_at_once(connect_from("127.0.0.7", proxy)),
        "{}",
        gw.logs()
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    while !(gw.logs().contains("max_connections_per_client")
        && gw.logs().contains("(gateway.limits.max_connections)"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = gw.logs();
    assert!(
        logs.contains("connection refused: 3 connections open from this address"),
        "{logs}"
    );
    assert!(
        logs.contains("connection refused: 5 connections open (gateway.limits.max_connections)"),
        "{logs}"
    );

    // The admitted connections are served; closing one frees its place.
    assert!(served(held.pop().unwrap()), "{}", gw.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(served(connect_from("127.0.0.7", proxy)), "{}", gw.logs());
    assert!(served(held.remove(0)), "{}", gw.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(served(connect_from("127.0.0.1", proxy)), "{}", gw.logs());
}
