//! No relay (root, network namespaces): a transparent listener is handed
//! a connection whose original destination is not a MISP instance — here by
//! a deliberately broad capture rule, as the old TPROXY ruleset did — and the
//! client names an allowlisted domain in `Host`. The gateway must refuse it
//! before connecting anywhere: the host that really owns that address sees
//! no connection at all, and the client gets none of its data.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::json;
use support::netns::{in_netns, join, must, prerequisites_met, Topology, SYNC_PORT, WAIT};
use support::{gateway_ca, instance_json, Gateway, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GW_PORT: u16 = 15002;
/// Not an instance: a second address of the server namespace.
const OTHER_IP: &str = "10.231.3.9";
const OTHER_PORT: u16 = 8080;
const SECRET: &[u8] = b"secret-compartment-data";

fn capture_ruleset(mode: &str) -> String {
    // Any TCP to port 8080 entering from the client side goes to the
    // gateway, whatever its destination address.
    let rule = match mode {
        "redirect" => format!(
            "chain pre {{ type nat hook prerouting priority dstnat; policy accept;
                iifname \"g0\" tcp dport {OTHER_PORT} redirect to :{GW_PORT}\n}}"
        ),
        _ => format!(
            "chain pre {{ type filter hook prerouting priority mangle; policy accept;
                meta l4proto tcp socket transparent 1 meta mark set 1 accept
                iifname \"g0\" meta nfproto ipv4 tcp dport {OTHER_PORT} tproxy ip to :{GW_PORT} meta mark set 1 accept\n}}"
        ),
    };
    format!("table inet mgw_relay_test {{\n{rule}\n}}\n")
}

fn no_relay(test: &str, mode: &str) {
    if !prerequisites_met(test) {
        return;
    }
    let topo = Topology::new();
    let dir = TempDir::new("netns-relay");
    let d = &dir.0;
    must(&[
        "ip",
        "-n",
        &topo.srv,
        "addr",
        "add",
        &format!("{OTHER_IP}/24"),
        "dev",
        "s0",
    ]);

    // The non-instance host: counts every connection it accepts and would
    // hand out its data to anyone.
    let accepted = Arc::new(AtomicUsize::new(0));
    let (up_tx, up_rx) = mpsc::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let seen = accepted.clone();
    let srv = in_netns(&topo.srv, move || async move {
        let l = tokio::net::TcpListener::bind((OTHER_IP, OTHER_PORT))
            .await
            .expect("bind other host");
        up_tx.send(()).unwrap();
        let serve = async {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                seen.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    SECRET.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.write_all(SECRET).await;
            }
        };
        tokio::select! {
            _ = serve => {}
            _ = tokio::time::timeout(Duration::from_secs(60), stop_rx) => {}
        }
    });
    up_rx.recv_timeout(WAIT).expect("other host up");

    let config = json!({
        "allowlist": {"urls": [format!("http://allowed.test:{OTHER_PORT}/")], "domains": ["allowed.test"]},
        "compartments_rules": {"can_reach": {"low": ["low", "high"], "high": ["high"]}},
        "instances": {
            "cli": instance_json("10.231.1.2", "cli.test", 443, "low"),
            "srv": instance_json("10.231.3.2", "srv.test", SYNC_PORT, "high"),
        },
        "gateway": {
            "listeners": [{"mode": mode, "listen": format!("0.0.0.0:{GW_PORT}")}],
            "capture_interfaces": ["g0"],
            "audit_log": "audit.jsonl",
            "tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "upstream_ca": "ca/ca.crt", "use_system_roots": false}
        }
    });
    gateway_ca(&d.join("ca"));
    let cfg = d.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    if mode == "tproxy" {
        topo.tproxy_routing();
    }
    topo.nft(&capture_ruleset(mode))
        .unwrap_or_else(|e| panic!("load {mode} test ruleset: {e}"));
    let gw = Gateway::start_wrapped(
        &["ip", "netns", "exec", &topo.gw],
        &["run", "--config", cfg.to_str().unwrap()],
        d.join("gw.log"),
    );

    // Plain HTTP naming the allowlisted domain, to the non-instance address.
    let client = in_netns(&topo.cli, || async {
        let to: SocketAddr = format!("{OTHER_IP}:{OTHER_PORT}").parse().unwrap();
        let mut c = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(to))
            .await
            .expect("connect timed out")
            .expect("the capture must accept the connection");
        let _ = c
            .write_all(b"GET / HTTP/1.1\r\nHost: allowed.test:8080\r\nConnection: close\r\n\r\n")
            .await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(WAIT, c.read_to_end(&mut got)).await;
        got
    });
    let got = join(client);
    // The refusal is logged just after the socket is closed: wait for it.
    let refusal = format!(
        "connection refused: {OTHER_IP}:{OTHER_PORT} - destination host {OTHER_IP} does not exist in instances hosts mapping"
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !gw.logs().contains(&refusal) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = gw.logs();
    assert!(
        !got.windows(SECRET.len()).any(|w| w == SECRET),
        "{mode}: the client got the other host's data: {:?}\n{logs}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "{mode}: the gateway connected to a non-instance address\n{logs}"
    );
    assert!(
        logs.contains(&refusal),
        "{mode}: the refusal must be logged with its reason\n{logs}"
    );
    // ...and audited as a decided exchange (stage `connection`).
    // (Written by the audit thread: wait for it, bounded.)
    let deadline = std::time::Instant::now() + WAIT;
    let mut audit = String::new();
    while !audit.contains('\n') && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        audit = std::fs::read_to_string(d.join("audit.jsonl")).unwrap_or_default();
    }
    let line: serde_json::Value = audit
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{mode}: no audit line\n{logs}"));
    assert_eq!(line["stage"], "connection", "{line}");
    assert_eq!(line["decision"], "block");
    assert_eq!(line["listener"], mode);
    assert_eq!(line["src_instance"], "cli");
    assert_eq!(line["path"], format!("{OTHER_IP}:{OTHER_PORT}"));
    assert_eq!(line["status"], 0);
    assert_eq!(
        line["reason"],
        format!("destination host {OTHER_IP} does not exist in instances hosts mapping")
    );
    let _ = stop_tx.send(());
    join(srv);
}

#[test]
fn redirect_listener_refuses_non_instance_destination_whatever_the_host() {
    no_relay(
        "redirect_listener_refuses_non_instance_destination_whatever_the_host",
        "redirect",
    );
}

#[test]
fn tproxy_listener_refuses_non_instance_destination_whatever_the_host() {
    no_relay(
        "tproxy_listener_refuses_non_instance_destination_whatever_the_host",
        "tproxy",
    );
}
