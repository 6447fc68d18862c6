//! The transparent gateway end to end in network namespaces (root): a curl
//! client with no proxy settings in `cli`, the gateway binary in `gw` behind
//! nftables REDIRECT or TPROXY rules loaded only there, MISP-like HTTPS
//! servers in `srv` (IPv4 and IPv6). Allowed pushes and pulls arrive
//! byte-exact; a push carrying `tlp:red` is answered 403 and the server
//! receives nothing.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use serde_json::json;
use support::netns::{curl, in_netns, prerequisites_met, Remote, Topology, SYNC_PORT, WAIT};
use support::{gateway_ca, gateway_cli, instance_json, misp_upstream, Gateway, Log, TempDir};

const GW_PORT: u16 = 15001;
const UUID: &str = "385283a1-b5e0-4e10-a532-dce11c365a56";

fn event(tags: &[&str]) -> String {
    let tags: Vec<_> = tags.iter().map(|t| json!({"name": t})).collect();
    json!({"Event": {"info": "netns", "distribution": "1", "Tag": tags,
        "Attribute": [{"type": "ip-dst", "category": "Network activity", "value": "192.0.2.1"}], "Object": []}})
    .to_string()
}

fn transparent(test: &str, mode: &str) {
    if !prerequisites_met(test) {
        return;
    }
    let topo = Topology::new();
    let dir = TempDir::new("netns-gw");
    let d = &dir.0;
    let ca = gateway_ca(&d.join("ca"));

    // MISP-like servers in `srv`, one per address family.
    let pull = Arc::new(Mutex::new(event(&["tlp:green"]).into_bytes()));
    let (logs_tx, logs_rx) = mpsc::channel::<(Log, Log)>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ca4, ca6, pull2) = (d.join("srv4-ca.crt"), d.join("srv6-ca.crt"), pull.clone());
    let srv = in_netns(&topo.srv, move || async move {
        let a4: SocketAddr = format!("10.231.3.2:{SYNC_PORT}").parse().unwrap();
        let a6: SocketAddr = format!("[fd00:231:3::2]:{SYNC_PORT}").parse().unwrap();
        let (_, l4) = misp_upstream(a4, "srv.test", &ca4, pull2.clone()).await;
        let (_, l6) = misp_upstream(a6, "srv6.test", &ca6, pull2).await;
        logs_tx.send((l4, l6)).unwrap();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(120), stop_rx).await;
    });
    let (log4, log6) = logs_rx.recv_timeout(WAIT).expect("servers up");

    let config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"low": ["low", "high"], "high": ["high"]}},
        "instances": {
            "cli": instance_json("10.231.1.2", "cli.test", 443, "low"),
            "cli6": instance_json("fd00:231:1::2", "cli6.test", 443, "low"),
            "srv": instance_json("10.231.3.2", "srv.test", SYNC_PORT, "high"),
            "srv6": instance_json("fd00:231:3::2", "srv6.test", SYNC_PORT, "high"),
        },
        "gateway": {
            "listeners": [{"mode": mode, "listen": format!("[::]:{GW_PORT}")}],
            "capture_interfaces": ["g0"],
            // TPROXY: the server sees the real MISP peer, not the gateway.
            "transparent_source": mode == "tproxy",
            "tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "use_system_roots": false},
            "instances": {"srv": {"upstream_ca": "srv4-ca.crt"}, "srv6": {"upstream_ca": "srv6-ca.crt"}}
        }
    });
    let cfg = d.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    // Capture rules only inside `gw`, rendered from this policy by the
    // gateway and applied with the shipped script (as on a router).
    let rules = d.join("rules.nft");
    let rendered = gateway_cli(&["nft", "--config", cfg.to_str().unwrap(), "--mode", mode]);
    std::fs::write(&rules, rendered).unwrap();
    let apply = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/apply-nftables.sh");
    support::netns::run(
        &[
            "ip",
            "netns",
            "exec",
            &topo.gw,
            apply,
            "--mode",
            mode,
            "--rules",
            rules.to_str().unwrap(),
            // Its record of the routing it added stays with the test, not
            // in the host's /run (where an uninstall would act on it).
            "--state-dir",
            d.to_str().unwrap(),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("apply {mode} rules: {e}"));
    let mut gw = Gateway::start_wrapped(
        &["ip", "netns", "exec", &topo.gw],
        &["run", "--config", cfg.to_str().unwrap()],
        d.join("gw.log"),
    );

    let (ok_file, red_file, out) = (d.join("ok.json"), d.join("red.json"), d.join("out"));
    std::fs::write(&ok_file, event(&["tlp:green"])).unwrap();
    std::fs::write(&red_file, event(&["tlp:red"])).unwrap();
    for (host, ip, client_ip, log) in [
        ("srv.test", "10.231.3.2", "10.231.1.2", &log4),
        ("srv6.test", "fd00:231:3::2", "fd00:231:1::2", &log6),
    ] {
        let remote = Remote {
            host,
            port: SYNC_PORT,
            ip,
        };
        let push =
            |file: &Path, path: &str| curl(&topo.cli, &ca, &remote, "POST", path, Some(file), &out);
        let (code, _) = push(&ok_file, "/events/add/metadata:1");
        assert_eq!(
            code,
            200,
            "{host} allowed push; gateway log:\n{}",
            gw.logs()
        );
        let got: Vec<_> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == "/events/add/metadata:1")
            .cloned()
            .collect();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].body,
            std::fs::read(&ok_file).unwrap(),
            "{host}: body must arrive byte-exact"
        );
        let peer = got[0].peer.ip().to_string();
        if mode == "tproxy" {
            assert_eq!(peer, client_ip, "{host}: transparent source");
        } else {
            assert_ne!(
                peer, client_ip,
                "{host}: redirect connects from the gateway"
            );
        }

        let (code, body) = push(&red_file, &format!("/events/edit/{UUID}"));
        assert_eq!(code, 403, "{host} tlp:red push");
        // A MISP API error, as MISP's sync client json-decodes it.
        let error: serde_json::Value = serde_json::from_slice(&body).expect("JSON refusal");
        assert_eq!(
            error["errors"], "event has blocked tag: tlp:red",
            "{host} tlp:red push"
        );
        assert!(
            !log.lock()
                .unwrap()
                .iter()
                .any(|r| r.path.starts_with("/events/edit/")),
            "{host}: the blocked push reached the server"
        );

        let (code, body) = curl(
            &topo.cli,
            &ca,
            &remote,
            "GET",
            &format!("/events/view/{UUID}"),
            None,
            &out,
        );
        assert_eq!(
            (code, body),
            (200, pull.lock().unwrap().clone()),
            "{host} pull"
        );
    }
    assert!(
        gw.logs().contains("event has blocked tag: tlp:red"),
        "{}",
        gw.logs()
    );
    assert_eq!(gw.terminate(), Some(0), "{}", gw.logs());
    let _ = stop_tx.send(());
    let _ = srv.join();
}

#[test]
fn transparent_redirect_with_curl_v4_and_v6() {
    transparent("transparent_redirect_with_curl_v4_and_v6", "redirect");
}

#[test]
fn transparent_tproxy_with_curl_v4_and_v6() {
    transparent("transparent_tproxy_with_curl_v4_and_v6", "tproxy");
}
