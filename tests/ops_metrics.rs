//! The health and metrics listener through the real binary on loopback:
//! `/healthz`, `/readyz`, and `/metrics` parsed as Prometheus text with the
//! counters moving as exchanges are allowed and blocked.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET on the ops listener: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(all).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// A strict reading of the text exposition: every sample line is
/// `name{label="value",...} number`, every sample belongs to a declared
/// `# TYPE` family, and the exposition ends with `# EOF`. Returns the
/// samples keyed by `name{labels}`.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut families = Vec::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with("# EOF\n"), "no EOF marker");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "type {kind}"
            );
            families.push(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample without value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad name {name}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1].split("\",") {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(!k.is_empty() && !v.contains('\n'), "{line}");
                }
            }
        }
        assert!(
            families.iter().any(|f| name.starts_with(f.as_str())),
            "{name} has no # TYPE"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

fn sum(samples: &BTreeMap<String, f64>, prefix: &str, has: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && has.iter().all(|h| k.contains(h)))
        .map(|(_, v)| v)
        .sum()
}

fn event(tags: &[&str]) -> Vec<u8> {
    let tags: Vec<_> = tags.iter().map(|t| json!({"name": t})).collect();
    json!({"Event": {"uuid": "3e8f4b5d-6a7c-4d9e-8f0a-2b3c4d5e6f7a", "info": "metrics", "distribution": "1", "Tag": tags,
        "Attribute": [], "Object": []}})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_that_move() {
    let dir = TempDir::new("metrics");
    let (server, _received) = misp_upstream(
        "127.0.0.2:0".parse().unwrap(),
        "b.test",
        &dir.0.join("server-ca.crt"),
        Arc::new(Mutex::new(event(&[]))),
    )
    .await;
    gateway_ca(&dir.0.join("ca"));
    let gw_port = free_port("127.0.0.1");
    let ops_port = free_port("127.0.0.1");
    let config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
        "instances": {
            "a": instance_json("127.0.0.1", "a.test", 443, "c1"),
            "b": instance_json("127.0.0.2", "b.test", server.port(), "c2"),
        },
        "gateway": {"tls": {"ca_cert": "ca/ca.crt", "ca_key": "ca/ca.key", "upstream_ca": "server-ca.crt", "use_system_roots": false},
                    "metrics": {"listen": format!("127.0.0.1:{ops_port}")}}
    });
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let ops: std::net::SocketAddr = format!("127.0.0.1:{ops_port}").parse().unwrap();
    let gw = Gateway::explicit(&cfg, proxy, &[], dir.0.join("gw.log"));

    assert_eq!(get(ops, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(get(ops, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(get(ops, "/nope").await.0, 404);
    let before = parse_exposition(&get(ops, "/metrics").await.1);
    assert_eq!(before["misp_guard_gw_config_generation"], 1.0);
    assert_eq!(sum(&before, "misp_guard_gw_exchanges_total", &[]), 0.0);

    let ca = dir.0.join("ca/ca.crt");
    for (tags, want) in [
        (vec!["tlp:green"], 200),
        (vec!["tlp:red"], 403),
        (vec!["tlp:red"], 403),
    ] {
        let body = event(&tags);
        let mut c = connect_tunnel(proxy, "b.test", server.port(), &ca)
            .await
            .expect("tunnel");
        let mut r = format!(
            "POST /events/add HTTP/1.1\r\nHost: b.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(&body);
        c.write_all(&r).await.unwrap();
        assert_eq!(
            read_answer(&mut c, "POST").await.unwrap().status,
            want,
            "{}",
            gw.logs()
        );
    }
    // The trail is counted when the exchange ends, just after the answer.
    let mut after = BTreeMap::new();
    for _ in 0..50 {
        after = parse_exposition(&get(ops, "/metrics").await.1);
        if sum(&after, "misp_guard_gw_exchanges_total", &[]) >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ex = "misp_guard_gw_exchanges_total";
    assert_eq!(
        sum(
            &after,
            ex,
            &["decision=\"allow\"", "src=\"a\"", "dst=\"b\""]
        ),
        1.0,
        "{after:#?}"
    );
    assert_eq!(
        sum(
            &after,
            ex,
            &[
                "decision=\"block\"",
                "reason=\"event has blocked tag\"",
                "endpoint=\"EventsAdd\""
            ]
        ),
        2.0,
        "{after:#?}"
    );
    assert!(after["misp_guard_gw_inspected_bytes_total"] > 0.0);
    assert_eq!(after["misp_guard_gw_exchange_duration_seconds_count"], 3.0);
    assert!(after["misp_guard_gw_upstream_duration_seconds_count"] >= 1.0);
    assert!(after.contains_key("misp_guard_gw_active_connections"));
    // No path and no uuid is ever a label.
    let text = get(ops, "/metrics").await.1;
    assert!(!text.contains("/events"), "{text}");
    assert!(!text.contains("3e8f4b5d"), "{text}");
}

/// Writes `text` to `path` as configuration management does: a new file
/// renamed over the old one.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool, gw: &Gateway) {
    for _ in 0..100 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}:\n{}", gw.logs());
}

/// A gateway with a metrics listener on a config file of its own, started
/// with `flag` (`--watch-config`, the default, stays accepted; or
/// `--no-watch-config`): its dir, config, metrics address and process.
fn watched_gateway(
    tag: &str,
    flag: &str,
) -> (TempDir, serde_json::Value, std::net::SocketAddr, Gateway) {
    let dir = TempDir::new(tag);
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let ops: std::net::SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let config = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
        "instances": {
            "a": instance_json("127.0.0.1", "a.test", 443, "c1"),
            "b": instance_json("127.0.0.2", "b.test", 443, "c2"),
        },
        "gateway": {"metrics": {"listen": ops.to_string()}}
    });
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let gw = Gateway::explicit(&cfg, proxy, &[flag], dir.0.join("gw.log"));
    (dir, config, ops, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_change_reloads_and_a_broken_file_keeps_the_policy() {
    let (dir, mut config, ops, gw) = watched_gateway("watch", "--watch-config");

    // 1. A good change, renamed into place: reloaded like SIGHUP.
    config["gateway"]["instances"] = json!({"a": {"mode": "monitor"}});
    replace_file(&dir.0.join("config.json"), &config.to_string());
    wait_for(
        "the reload",
        || gw.logs().contains("instance a: MODE MONITOR"),
        &gw,
    )
    .await;
    assert!(gw.logs().contains("changed: reloading"), "{}", gw.logs());
    let m = parse_exposition(&get(ops, "/metrics").await.1);
    assert_eq!(m["misp_guard_gw_config_generation"], 2.0, "{m:#?}");
    assert_eq!(
        m["misp_guard_gw_reloads_total{result=\"ok\"}"], 1.0,
        "{m:#?}"
    );

    // 2. A broken file: the field is named, the running policy stays, the
    //    failure is counted — once, not every second.
    config["instances"]["a"]["port"] = json!("https");
    replace_file(&dir.0.join("config.json"), &config.to_string());
    wait_for(
        "the failed reload",
        || gw.logs().contains("reload failed"),
        &gw,
    )
    .await;
    let logs = gw.logs();
    assert!(logs.contains("instances.a.port"), "{logs}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let m = parse_exposition(&get(ops, "/metrics").await.1);
    assert_eq!(
        m["misp_guard_gw_reloads_total{result=\"failed\"}"], 1.0,
        "{m:#?}"
    );
    assert_eq!(m["misp_guard_gw_config_generation"], 2.0);
    assert_eq!(get(ops, "/readyz").await.0, 200);

    // 3. An edit followed at once by SIGHUP (`systemctl reload` after
    //    configuration management) is applied once, not once per trigger.
    config["instances"]["a"]["port"] = json!(443);
    config["gateway"]["instances"] = json!({});
    replace_file(&dir.0.join("config.json"), &config.to_string());
    std::process::Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap();
    wait_for(
        "the reload",
        || gw.logs().contains("instance a: mode enforce"),
        &gw,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let m = parse_exposition(&get(ops, "/metrics").await.1);
    assert_eq!(
        m["misp_guard_gw_reloads_total{result=\"ok\"}"],
        2.0,
        "{m:#?}\n{}",
        gw.logs()
    );
}

/// `--no-watch-config`: a change of the file is not applied until SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watch_config_reloads_on_sighup_only() {
    let (dir, mut config, ops, gw) = watched_gateway("nowatch", "--no-watch-config");
    assert!(gw.logs().contains("not watched"), "{}", gw.logs());
    config["gateway"]["instances"] = json!({"a": {"mode": "monitor"}});
    replace_file(&dir.0.join("config.json"), &config.to_string());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let m = parse_exposition(&get(ops, "/metrics").await.1);
    assert_eq!(m["misp_guard_gw_config_generation"], 1.0, "{}", gw.logs());
    std::process::Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap();
    wait_for(
        "the reload",
        || gw.logs().contains("instance a: MODE MONITOR"),
        &gw,
    )
    .await;
    let m = parse_exposition(&get(ops, "/metrics").await.1);
    assert_eq!(m["misp_guard_gw_config_generation"], 2.0);
}
