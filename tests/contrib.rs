//! The shipped Grafana dashboard and Prometheus alert rules parse, and every
//! metric they query is one the gateway exports (names taken from the
//! gateway's own exposition, so a renamed metric fails here).

use std::collections::BTreeSet;
use std::path::Path;

use std::time::Duration;

use misp_guard_gw::ops::metrics::{ExchangeSample, Metrics};

/// Every sample name the exposition can carry: `# TYPE` families, with the
/// suffixes Prometheus queries use (`_total`, `_bucket`, `_sum`, `_count`).
fn exported() -> BTreeSet<String> {
    // Label families appear once they have a sample: give each one.
    let m = Metrics::new();
    m.exchange(&ExchangeSample {
        decision: "block",
        reason: Some("event has blocked tag: tlp:red"),
        endpoint: "EventsAdd",
        src: "a",
        dst: "b",
        inspected_bytes: 1,
        inspection: Duration::from_micros(1),
        upstream: Some(Duration::from_micros(1)),
        total: Duration::from_micros(2),
    });
    m.handshake_failure("client", "timeout");
    m.upstream_error("connect");
    m.reload(false);
    let text = m.render(0, 0, true);
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    assert!(names.len() >= 12, "{names:?}\n{text}");
    names
}

/// The metric names a PromQL expression uses (the gateway's prefix).
fn used(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("misp_guard_gw_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn check(exprs: &[String], what: &str) {
    let known = exported();
    assert!(!exprs.is_empty(), "{what}: no expressions");
    for e in exprs {
        let names = used(e);
        assert!(!names.is_empty(), "{what}: {e} queries no gateway metric");
        for n in names {
            assert!(
                known.contains(&n),
                "{what}: {n} is not exported ({e}): {known:?}"
            );
        }
    }
}

#[test]
fn grafana_dashboard_queries_exported_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/misp-guard-gw.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"].as_str().filter(|q| q.contains("misp_guard_gw_")) {
            exprs.push(q.to_string());
        }
    }
    check(&exprs, "dashboard");
    // What the issue asks the dashboard to show.
    let all = exprs.join("\n");
    for m in [
        "misp_guard_gw_exchanges_total",
        "misp_guard_gw_exchange_duration_seconds_bucket",
        "misp_guard_gw_reloads_total",
        "misp_guard_gw_tls_handshake_failures_total",
    ] {
        assert!(all.contains(m), "dashboard lacks {m}");
    }
}

#[test]
fn alert_rules_query_exported_metrics() {
    use yaml_rust2::YamlLoader;
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/misp-guard-gw.rules.yml");
    let docs = YamlLoader::load_from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    let mut alerts = Vec::new();
    for group in docs[0]["groups"].as_vec().unwrap() {
        assert!(group["name"].as_str().is_some());
        for rule in group["rules"].as_vec().unwrap() {
            alerts.push(rule["alert"].as_str().unwrap().to_string());
            exprs.push(rule["expr"].as_str().unwrap().to_string());
        }
    }
    check(&exprs, "alert rules");
    for a in [
        "MispGuardGwBlocksSpike",
        "MispGuardGwReloadFailed",
        "MispGuardGwRulesRestored",
        "MispGuardGwNotReady",
    ] {
        assert!(alerts.iter().any(|x| x == a), "missing alert {a}");
    }
}
