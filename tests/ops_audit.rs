//! The audit trail through the real binary on loopback (no root needed):
//! every decided exchange — pushes and pulls, allowed and blocked — leaves
//! one JSON line carrying every documented field, with the event uuids the
//! bodies carried and without credentials.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PUSHED: &str = "0b5c1e2a-3d4f-4a6b-8c7d-9e0f1a2b3c4d";
const RED: &str = "1c6d2f3b-4e5a-4b7c-9d8e-0f1a2b3c4d5e";
const PULLED: &str = "2d7e3a4c-5f6b-4c8d-8e9f-1a2b3c4d5e6f";

/// Every field an audit line has (README "Audit log").
const FIELDS: [&str; 20] = [
    "ts",
    "conn",
    "listener",
    "client",
    "src_instance",
    "src_compartment",
    "dst_instance",
    "dst_compartment",
    "sni",
    "method",
    "path",
    "stage",
    "decision",
    "reason",
    "status",
    "request_bytes",
    "response_bytes",
    "uuids",
    "uuids_truncated",
    "duration_ms",
];

fn event(uuid: &str, tags: &[&str]) -> Vec<u8> {
    let tags: Vec<_> = tags.iter().map(|t| json!({"name": t})).collect();
    json!({"Event": {"uuid": uuid, "info": "audit test", "distribution": "1", "Tag": tags,
        "Attribute": [{"type": "domain", "category": "Network activity", "value": "a.example", "distribution": "5"}],
        "Object": []}})
    .to_string()
    .into_bytes()
}

fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: b.test\r\nAuthorization: secret-auth-key\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
    );
    if !body.is_empty() {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// Waits (bounded) until the audit file holds `n` lines; each must be one
/// JSON object.
fn audit_lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "audit log has fewer than {n} lines:\n{}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

fn assert_fields(line: &Value) {
    let obj = line.as_object().expect("an object");
    for f in FIELDS {
        assert!(obj.contains_key(f), "field {f} missing in {line}");
    }
    assert_eq!(obj.len(), FIELDS.len(), "undocumented fields in {line}");
    assert!(
        time_like(line["ts"].as_str().unwrap()),
        "ts is not RFC 3339: {line}"
    );
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        !line.to_string().contains("secret-auth-key"),
        "credential audited"
    );
}

fn time_like(ts: &str) -> bool {
    // 2026-11-30T19:31:01.123Z
    ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.as_bytes()[10] == b'T' && ts.ends_with('Z')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_for_pushes_and_pulls() {
    let dir = TempDir::new("audit");
    let pull_body = Arc::new(Mutex::new(event(PULLED, &["tlp:green"])));
    let (server, received) = misp_upstream(
        "127.0.0.2:0".parse().unwrap(),
        "b.test",
        &dir.0.join("server-ca.crt"),
        pull_body.clone(),
    )
    .await;
    gateway_ca(&dir.0.join("ca"));
    let gw_port = free_port("127.0.0.1");
    let config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
        "instances": {
            "a": instance_json("127.0.0.1", "a.test", 443, "c1"),
            "b": instance_json("127.0.0.2", "b.test", server.port(), "c2"),
        },
        "gateway": {"tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "upstream_ca": "server-ca.crt", "use_system_roots": false},
                    "audit_log": "audit.jsonl"}
    });
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let gw = Gateway::explicit(
        &cfg,
        proxy,
        &["--log-allowed", "info"],
        dir.0.join("gw.log"),
    );
    let audit = dir.0.join("audit.jsonl");
    let ca = dir.0.join("ca/ca.crt");
    let tunnel = || async {
        connect_tunnel(proxy, "b.test", server.port(), &ca)
            .await
            .expect("tunnel")
    };

    // 1. Allowed push.
    let ok = event(PUSHED, &["tlp:green"]);
    let mut c = tunnel().await;
    c.write_all(&request("POST", "/events/add/metadata:1", &ok))
        .await
        .unwrap();
    let a = read_answer(&mut c, "POST").await.unwrap();
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    // 2. Blocked push.
    let red = event(RED, &["tlp:red"]);
    let mut c = tunnel().await;
    c.write_all(&request("POST", "/events/add", &red))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut c, "POST").await.unwrap().status, 403);
    // 3. Allowed pull, then 4. a blocked one.
    let mut c = tunnel().await;
    c.write_all(&request("GET", &format!("/events/view/{PULLED}"), b""))
        .await
        .unwrap();
    let pulled = read_answer(&mut c, "GET").await.unwrap();
    assert_eq!(pulled.status, 200);
    *pull_body.lock().unwrap() = event(PULLED, &["tlp:red"]);
    let mut c = tunnel().await;
    c.write_all(&request("GET", &format!("/events/view/{PULLED}"), b""))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut c, "GET").await.unwrap().status, 403);

    // 5. A CONNECT the policy refuses (no such instance), and 6. a tunnel
    //    to b whose TLS names another destination: refused before any
    //    request, audited all the same.
    let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(b"CONNECT c.test:443 HTTP/1.1\r\nHost: c.test:443\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let authority = format!("b.test:{}", server.port());
    tcp.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 39]; // "HTTP/1.1 200 Connection established\r\n\r\n"
    tcp.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let wrong_name =
        misp_guard_gw::tls::connect(client_config(&ca), "a.test", tcp, Duration::from_secs(5))
            .await;
    assert!(wrong_name.is_err(), "TLS for another name must be refused");

    let lines = audit_lines(&audit, 6);
    assert_eq!(lines.len(), 6, "{lines:#?}\n{}", gw.logs());
    let (refused_connect, refused_sni) = (&lines[4], &lines[5]);
    for l in [refused_connect, refused_sni] {
        assert_fields(l);
        assert_eq!(l["stage"], "connection", "{l}");
        assert_eq!(l["decision"], "block");
        assert_eq!(l["src_instance"], "a");
        assert_eq!(l["request_bytes"], 0);
        assert_eq!(l["uuids"], json!([]));
    }
    assert_eq!(refused_connect["method"], "CONNECT");
    assert_eq!(refused_connect["path"], "c.test:443");
    assert_eq!(refused_connect["status"], 403);
    assert_eq!(refused_connect["dst_instance"], Value::Null);
    assert_eq!(refused_sni["dst_instance"], "b");
    assert!(
        refused_connect["reason"]
            .as_str()
            .unwrap()
            .contains("c.test"),
        "{refused_connect}"
    );
    assert_eq!(refused_sni["method"], "");
    assert_eq!(refused_sni["sni"], "a.test");
    assert_eq!(refused_sni["path"], authority);
    assert_eq!(refused_sni["status"], 0);
    assert_eq!(
        refused_sni["reason"], "SNI does not match CONNECT host b.test",
        "{refused_sni}"
    );

    let lines = &lines[..4];
    for l in lines {
        assert_fields(l);
        assert_eq!(l["listener"], "explicit");
        assert_eq!(l["client"], "127.0.0.1");
        assert_eq!(l["src_instance"], "a");
        assert_eq!(l["src_compartment"], "c1");
        assert_eq!(l["dst_instance"], "b");
        assert_eq!(l["dst_compartment"], "c2");
        assert_eq!(l["sni"], "b.test");
    }
    let (push_ok, push_red, pull_ok, pull_red) = (&lines[0], &lines[1], &lines[2], &lines[3]);

    assert_eq!(push_ok["decision"], "allow");
    assert_eq!(push_ok["stage"], "response_body");
    assert_eq!(push_ok["status"], 200);
    assert_eq!(push_ok["method"], "POST");
    assert_eq!(push_ok["path"], "/events/add/metadata:1");
    assert_eq!(push_ok["reason"], Value::Null);
    assert_eq!(push_ok["request_bytes"], ok.len());
    assert!(push_ok["response_bytes"].as_u64().unwrap() > 0);
    // The push and the stored event MISP answered with: the same uuid.
    assert_eq!(push_ok["uuids"], json!([PUSHED, PUSHED]));

    assert_eq!(push_red["decision"], "block");
    assert_eq!(push_red["stage"], "request_body");
    assert_eq!(push_red["status"], 403);
    assert_eq!(push_red["reason"], "event has blocked tag: tlp:red");
    assert_eq!(push_red["uuids"], json!([RED]));
    assert_eq!(push_red["response_bytes"], 0);
    assert!(
        !received.lock().unwrap().iter().any(|r| r.body == red),
        "blocked push reached the server"
    );

    assert_eq!(pull_ok["decision"], "allow");
    assert_eq!(pull_ok["method"], "GET");
    assert_eq!(pull_ok["uuids"], json!([PULLED]));
    assert_eq!(pull_ok["response_bytes"], pulled.body.len());

    assert_eq!(pull_red["decision"], "block");
    assert_eq!(pull_red["stage"], "response_body");
    assert_eq!(pull_red["reason"], "event has blocked tag: tlp:red");
    assert_eq!(pull_red["uuids"], json!([PULLED]));

    // Block lines: misp-guard's text, then the instances and the event.
    let line = gw
        .logs()
        .lines()
        .find(|l| l.contains("request blocked: [POST]/events/add - event has blocked tag: tlp:red"))
        .unwrap_or_else(|| panic!("{}", gw.logs()))
        .to_string();
    for field in ["src=a", "dst=b", &format!("event_uuid={RED}")] {
        assert!(line.contains(field), "{field} missing: {line}");
    }

    // Allowed exchanges logged at the chosen level (`--log-allowed info`),
    // with the same fields as a block line.
    let allowed = gw
        .logs()
        .lines()
        .find(|l| l.contains("request allowed: [POST]/events/add/metadata:1 -> 200"))
        .unwrap_or_else(|| panic!("{}", gw.logs()))
        .to_string();
    assert!(allowed.contains(" INFO "), "{allowed}");
    for field in ["src=a", "dst=b", &format!("event_uuid={PUSHED}")] {
        assert!(allowed.contains(field), "{field} missing: {allowed}");
    }
    assert_eq!(
        gw.logs().matches("request allowed:").count(),
        2,
        "{}",
        gw.logs()
    );

    // Each exchange had its own connection.
    let conns: std::collections::BTreeSet<u64> =
        lines.iter().map(|l| l["conn"].as_u64().unwrap()).collect();
    assert_eq!(conns.len(), 4);
}

/// A CONNECT tunnel (then TLS) opened from `src`, so the gateway sees the
/// client as the instance that owns that address.
async fn tunnel_from(
    src: &str,
    proxy: std::net::SocketAddr,
    host: &str,
    port: u16,
    ca: &std::path::Path,
) -> misp_guard_gw::http::io::HttpIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let mut tcp = sock.connect(proxy).await.unwrap();
    tcp.write_all(
        format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(tcp.read(&mut b).await.unwrap(), 1, "CONNECT refused");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let tls = misp_guard_gw::tls::connect(client_config(ca), host, tcp, Duration::from_secs(5))
        .await
        .unwrap();
    misp_guard_gw::http::io::HttpIo::new(tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_mode_forwards_and_audits_would_block_per_instance() {
    let dir = TempDir::new("monitor");
    let pull_body = Arc::new(Mutex::new(event(PULLED, &["tlp:red"])));
    let (server, received) = misp_upstream(
        "127.0.0.2:0".parse().unwrap(),
        "b.test",
        &dir.0.join("server-ca.crt"),
        pull_body.clone(),
    )
    .await;
    gateway_ca(&dir.0.join("ca"));
    let gw_port = free_port("127.0.0.1");
    // `a` is rolled out in monitor mode, `e` (same compartment) is enforced;
    // `b` answers pulls and is enforced (gateway.mode's default).
    let config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
        "instances": {
            "a": instance_json("127.0.0.1", "a.test", 443, "c1"),
            "e": instance_json("127.0.0.3", "e.test", 443, "c1"),
            "b": instance_json("127.0.0.2", "b.test", server.port(), "c2"),
        },
        "gateway": {"tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "upstream_ca": "server-ca.crt", "use_system_roots": false},
                    "mode": "enforce",
                    "instances": {"a": {"mode": "monitor"}}}
    });
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let summary = String::from_utf8(gateway_cli(&[
        "check-config",
        "--config",
        cfg.to_str().unwrap(),
    ]))
    .unwrap();
    assert!(
        summary.contains("mode (gateway.mode): enforce"),
        "{summary}"
    );
    assert!(
        summary
            .lines()
            .any(|l| l.trim_start().starts_with("a ") && l.contains("MONITOR")),
        "{summary}"
    );
    assert!(
        summary
            .lines()
            .any(|l| l.trim_start().starts_with("e ") && l.contains("enforce")),
        "{summary}"
    );

    let proxy: std::net::SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let audit = dir.0.join("audit.jsonl");
    let gw = Gateway::start(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--explicit",
            &proxy.to_string(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
        dir.0.join("gw.log"),
    );
    let ca = dir.0.join("ca/ca.crt");

    // 1. a's tlp:red push crosses unchanged, audited would_block.
    let red = event(RED, &["tlp:red"]);
    let mut c = tunnel_from("127.0.0.1", proxy, "b.test", server.port(), &ca).await;
    c.write_all(&request("POST", "/events/add", &red))
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut c, "POST").await.unwrap().status,
        200,
        "{}",
        gw.logs()
    );
    let got: Vec<_> = received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/events/add")
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(got, vec![red.clone()], "forwarded byte for byte");

    // 2. The same push from the enforced instance e is refused.
    let red_e = event(PUSHED, &["tlp:red"]);
    let mut c = tunnel_from("127.0.0.3", proxy, "b.test", server.port(), &ca).await;
    c.write_all(&request("POST", "/events/add", &red_e))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut c, "POST").await.unwrap().status, 403);
    assert!(!received.lock().unwrap().iter().any(|r| r.body == red_e));

    // 3. A pull by a is decided by b's rules, and b is enforced.
    let mut c = tunnel_from("127.0.0.1", proxy, "b.test", server.port(), &ca).await;
    c.write_all(&request("GET", &format!("/events/view/{PULLED}"), b""))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut c, "GET").await.unwrap().status, 403);

    let lines = audit_lines(&audit, 3);
    for l in &lines {
        assert_fields(l);
    }
    assert_eq!(lines[0]["decision"], "would_block", "{lines:#?}");
    assert_eq!(lines[0]["src_instance"], "a");
    assert_eq!(lines[0]["reason"], "event has blocked tag: tlp:red");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["uuids"][0], RED);
    assert_eq!(lines[1]["decision"], "block");
    assert_eq!(lines[1]["src_instance"], "e");
    assert_eq!(lines[2]["decision"], "block");
    assert_eq!(lines[2]["stage"], "response_body");

    let logs = gw.logs();
    assert!(logs.contains("instance a: MODE MONITOR"), "{logs}");
    assert!(logs.contains("instance e: mode enforce"), "{logs}");
    assert!(
        logs.contains("request would be blocked (monitor mode, forwarded): [POST]/events/add - event has blocked tag: tlp:red"),
        "{logs}"
    );
    // Only e's push and the pull are reported as blocks.
    assert_eq!(logs.matches("request blocked: ").count(), 2, "{logs}");
}
