//! Config errors must name the file and the JSON path of the bad field.

use std::path::Path;

use super::*;

const BASE: &str = r#"{
  "allowlist": {"urls": [], "domains": []},
  "compartments_rules": {"can_reach": {"c1": ["c1", "c2"], "c2": ["c2"]}},
  "instances": {
    "one": {"ip": "10.0.0.1", "host": "one.example", "port": 443, "compartment_id": "c1", "affiliation": "",
            "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": []},
            "blocked_distribution_levels": ["0"], "blocked_sharing_groups_uuids": [],
            "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []},
    "two": {"ip": "10.0.0.2", "host": "two.example", "port": 443, "compartment_id": "c2", "affiliation": "",
            "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": []},
            "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
            "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []}
  }
}"#;

fn load_str(s: &str) -> Result<Policy, ConfigError> {
    from_slice(s.as_bytes(), Path::new("/etc/misp-guard-gw/config.json"))
}

/// Applies `edit` to the base config and expects an error mentioning `path`
/// and `message`.
fn expect_err(edit: impl FnOnce(&mut serde_json::Value), path: &str, message: &str) {
    let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
    edit(&mut v);
    let e = load_str(&v.to_string()).expect_err("config must be refused");
    let shown = e.to_string();
    assert!(
        shown.starts_with("/etc/misp-guard-gw/config.json: "),
        "{shown}"
    );
    assert_eq!(e.path, path, "{shown}");
    assert!(e.message.contains(message), "{shown}");
}

#[test]
fn base_config_loads() {
    let p = load_str(BASE).unwrap();
    assert_eq!(p.instances.len(), 2);
    assert_eq!(p.limits, Limits::default());
    assert!(p.warnings.is_empty());
}

#[test]
fn every_problem_names_its_field() {
    expect_err(
        |v| v["instances"]["one"]["blocked_tag"] = "x".into(),
        "instances.one.blocked_tag",
        "unknown field `blocked_tag`",
    );
    expect_err(
        |v| v["instances"]["one"]["taxonomies_rules"]["blockd_tags"] = serde_json::json!([]),
        "instances.one.taxonomies_rules.blockd_tags",
        "unknown field",
    );
    expect_err(
        |v| {
            v["instances"]["one"]
                .as_object_mut()
                .unwrap()
                .remove("port");
        },
        "instances.one",
        "missing field `port`",
    );
    expect_err(
        |v| v["instances"]["one"]["port"] = 70000.into(),
        "instances.one.port",
        "not a port",
    );
    expect_err(
        |v| v["instances"]["one"]["port"] = "443".into(),
        "instances.one.port",
        "invalid type",
    );
    expect_err(
        |v| v["instances"]["one"]["ip"] = "10.0.0.300".into(),
        "instances.one.ip",
        "not an IPv4 or IPv6",
    );
    expect_err(
        |v| v["instances"]["two"]["ip"] = "10.0.0.1".into(),
        "instances.two.ip",
        "also the ip of instance one",
    );
    expect_err(
        |v| v["instances"]["two"]["host"] = "ONE.example".into(),
        "instances.two.host",
        "also the host of instance one",
    );
    expect_err(
        |v| v["instances"]["one"]["host"] = "bad_host".into(),
        "instances.one.host",
        "not a valid host name",
    );
    expect_err(
        |v| v["instances"]["one"]["compartment_id"] = "C1".into(),
        "instances.one.compartment_id",
        "must match",
    );
    expect_err(
        |v| v["instances"]["one"]["blocked_distribution_levels"] = serde_json::json!(["0", 1]),
        "instances.one.blocked_distribution_levels[1]",
        "invalid type",
    );
    expect_err(
        |v| v["instances"]["one"]["blocked_distribution_levels"] = serde_json::json!(["6"]),
        "instances.one.blocked_distribution_levels[0]",
        "not one of",
    );
    expect_err(
        |v| v["instances"]["one"]["blocked_sharing_groups_uuids"] = serde_json::json!(["nope"]),
        "instances.one.blocked_sharing_groups_uuids[0]",
        "not a uuid",
    );
    expect_err(
        |v| v["allowlist"]["domains"] = serde_json::json!(["one.example"]),
        "allowlist.domains[0]",
        "would bypass",
    );
    expect_err(
        |v| v["allowlist"]["urls"] = serde_json::json!(["https://10.0.0.2/x"]),
        "allowlist.urls[0]",
        "would bypass",
    );
    expect_err(
        |v| v["allowlist"]["urls"] = serde_json::json!(["gopher://a.example/"]),
        "allowlist.urls[0]",
        "scheme",
    );
    expect_err(
        |v| v["compartments_rules"]["can_reach"]["c1"] = serde_json::json!(["Bad"]),
        "compartments_rules.can_reach.c1[0]",
        "must match",
    );
    expect_err(
        |v| v["gateway"] = serde_json::json!({"limits": {"max_body_bytes": 0}}),
        "gateway.limits.max_body_bytes",
        "greater than 0",
    );
    expect_err(
        |v| v["gateway"] = serde_json::json!({"limits": {"max_connections_per_client": 0}}),
        "gateway.limits.max_connections_per_client",
        "greater than 0",
    );
    expect_err(
        |v| v["gateway"] = serde_json::json!({"limit": {}}),
        "gateway.limit",
        "unknown field `limit`",
    );
    expect_err(|v| v["extra"] = 1.into(), "extra", "unknown field `extra`");
}

#[test]
fn duplicate_ids_are_refused() {
    let dup = BASE.replacen("\"two\": {", "\"one\": {", 1);
    let e = load_str(&dup).unwrap_err();
    assert!(e.to_string().contains("duplicate key `one`"), "{e}");
}

#[test]
fn empty_object_names_the_missing_field() {
    let e = load_str("{}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/misp-guard-gw/config.json: missing field `allowlist` at line 1 column 2"
    );
}

#[test]
fn missing_file_names_the_file() {
    let e = load(Path::new("/nonexistent/config.json")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/config.json: cannot read config file"),
        "{e}"
    );
}

#[test]
fn unreachable_compartment_is_a_warning() {
    let cfg = BASE.replace("\"c2\": [\"c2\"]", "\"c9\": [\"c2\"]");
    let p = load_str(&cfg).unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].contains("instances.two.compartment_id"));
}

#[test]
fn gateway_limits_override_defaults() {
    let cfg = BASE.replacen(
        "{",
        r#"{"gateway": {"limits": {"max_body_bytes": 1024, "max_decompression_ratio": 50,
            "max_connections": 10, "max_connections_per_client": 2}},"#,
        1,
    );
    let p = load_str(&cfg).unwrap();
    assert_eq!(p.limits.max_body_bytes, 1024);
    assert_eq!(p.limits.max_decompression_ratio, 50);
    assert_eq!(
        (
            p.limits.max_connections,
            p.limits.max_connections_per_client
        ),
        (10, 2)
    );
    assert_eq!(
        p.limits.max_decoded_body_bytes,
        Limits::default().max_decoded_body_bytes
    );
}

#[test]
fn buffered_bytes_budget_defaults_follows_body_limit_and_must_hold_one_body() {
    let with = |limits: &str| {
        load_str(&BASE.replacen('{', &format!(r#"{{"gateway": {{"limits": {limits}}},"#), 1))
    };
    assert_eq!(with("{}").unwrap().limits.max_buffered_bytes, 512 << 20);
    // Unset: never below the body limit.
    let big = with(r#"{"max_body_bytes": 1073741824}"#).unwrap();
    assert_eq!(big.limits.max_buffered_bytes, 1 << 30);
    let set = with(r#"{"max_body_bytes": 1000, "max_buffered_bytes": 5000}"#).unwrap();
    assert_eq!(set.limits.max_buffered_bytes, 5000);
    for (limits, message) in [
        (
            r#"{"max_body_bytes": 1000, "max_buffered_bytes": 999}"#,
            "below gateway.limits.max_body_bytes (1000)",
        ),
        (
            r#"{"max_buffered_bytes": 0}"#,
            "below gateway.limits.max_body_bytes",
        ),
    ] {
        let e = with(limits).expect_err(limits);
        assert_eq!(e.path, "gateway.limits.max_buffered_bytes", "{e}");
        assert!(e.message.contains(message), "{e}");
    }
}

#[test]
fn header_limits_default_override_and_bounds_name_the_field() {
    let d = load_str(BASE).unwrap().limits;
    assert_eq!((d.max_header_count, d.max_header_bytes), (100, 65536));
    let cfg = BASE.replacen(
        '{',
        r#"{"gateway": {"limits": {"max_header_count": 20, "max_header_bytes": 4096}},"#,
        1,
    );
    let l = load_str(&cfg).unwrap().limits;
    assert_eq!((l.max_header_count, l.max_header_bytes), (20, 4096));
    for (key, value) in [
        ("max_header_count", 0),
        ("max_header_count", 10_001),
        ("max_header_bytes", 1023),
        ("max_header_bytes", (1 << 20) + 1),
    ] {
        expect_err(
            |v| v["gateway"] = serde_json::json!({"limits": {key: value}}),
            &format!("gateway.limits.{key}"),
            "is not between",
        );
    }
}

#[test]
fn shipped_sample_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.sample.json");
    let p = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn gateway_section_compiles() {
    let cfg = BASE.replacen(
        "{",
        r#"{"gateway": {
            "listeners": [{"mode": "redirect", "listen": "0.0.0.0:8443"}, {"mode": "explicit", "listen": "[::1]:3128"}],
            "tls": {"ca_cert": "ca.crt", "ca_key": "/abs/ca.key", "insecure_upstream": true},
            "timeouts": {"idle_secs": 60},
            "instances": {"two": {"upstream_pin_sha256": "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89"}}
        },"#,
        1,
    );
    let p = load_str(&cfg).unwrap();
    let g = &p.gateway;
    assert_eq!(g.listeners.len(), 2);
    assert_eq!(g.listeners[1].mode, crate::policy::ListenMode::Explicit);
    assert_eq!(
        g.tls.ca_cert.as_deref(),
        Some(Path::new("/etc/misp-guard-gw/ca.crt"))
    );
    assert_eq!(g.tls.ca_key.as_deref(), Some(Path::new("/abs/ca.key")));
    assert!(g.tls.insecure_upstream && g.tls.use_system_roots);
    assert_eq!(g.timeouts.idle.as_secs(), 60);
    assert_eq!(
        g.timeouts.request_head,
        crate::policy::Timeouts::default().request_head
    );
    let two = p.instances.iter().position(|i| i.id == "two").unwrap();
    assert_eq!(g.instances[two].upstream_pin_sha256.unwrap()[0], 0xab);
}

#[test]
fn gateway_section_errors_name_the_field() {
    expect_err(
        |v| {
            v["gateway"] =
                serde_json::json!({"listeners": [{"mode": "magic", "listen": "0.0.0.0:1"}]})
        },
        "gateway.listeners[0].mode",
        "not redirect",
    );
    expect_err(
        |v| {
            v["gateway"] =
                serde_json::json!({"listeners": [{"mode": "tproxy", "listen": "0.0.0.0"}]})
        },
        "gateway.listeners[0].listen",
        "not ip:port",
    );
    expect_err(
        |v| v["gateway"] = serde_json::json!({"tls": {"ca_cert": "a"}}),
        "gateway.tls.ca_key",
        "required when ca_cert",
    );
    expect_err(
        |v| v["gateway"] = serde_json::json!({"instances": {"nine": {}}}),
        "gateway.instances.nine",
        "not an instance",
    );
    expect_err(
        |v| v["gateway"] = serde_json::json!({"instances": {"one": {"upstream_pin_sha256": "zz"}}}),
        "gateway.instances.one.upstream_pin_sha256",
        "",
    );
    expect_err(
        |v| v["gateway"] = serde_json::json!({"timeouts": {"idle_secs": 0}}),
        "gateway.timeouts.idle_secs",
        "greater than 0",
    );
}

#[test]
fn body_min_rate_defaults_overrides_and_refusals() {
    let d = load_str(BASE).unwrap().gateway.timeouts;
    assert_eq!(
        (d.body_min_rate, d.body_min_rate_grace.as_secs()),
        (1024, 10)
    );
    let cfg = BASE.replacen(
        '{',
        r#"{"gateway": {"timeouts": {"body_min_rate": 50, "body_min_rate_grace_secs": 3}},"#,
        1,
    );
    let t = load_str(&cfg).unwrap().gateway.timeouts;
    assert_eq!((t.body_min_rate, t.body_min_rate_grace.as_secs()), (50, 3));
    expect_err(
        |v| v["gateway"] = serde_json::json!({"timeouts": {"body_min_rate": 0}}),
        "gateway.timeouts.body_min_rate",
        "greater than 0",
    );
    expect_err(
        |v| v["gateway"] = serde_json::json!({"timeouts": {"body_min_rate_grace_secs": 0}}),
        "gateway.timeouts.body_min_rate_grace_secs",
        "greater than 0",
    );
}

#[test]
fn upstream_idle_defaults_zero_turns_pooling_off_and_too_long_is_refused() {
    let d = load_str(BASE).unwrap().gateway.timeouts;
    assert_eq!(d.upstream_idle.as_secs(), 4);
    let with = |n: u64| {
        BASE.replacen(
            '{',
            &format!(r#"{{"gateway": {{"timeouts": {{"upstream_idle_secs": {n}}}}},"#),
            1,
        )
    };
    let t = load_str(&with(0)).unwrap().gateway.timeouts;
    assert!(t.upstream_idle.is_zero());
    let t = load_str(&with(30)).unwrap().gateway.timeouts;
    assert_eq!(t.upstream_idle.as_secs(), 30);
    expect_err(
        |v| v["gateway"] = serde_json::json!({"timeouts": {"upstream_idle_secs": 86_401}}),
        "gateway.timeouts.upstream_idle_secs",
        "at most 86400",
    );
}

#[test]
fn tproxy_routing_defaults_and_refusals_name_the_field() {
    let p = load_str(BASE).unwrap();
    assert_eq!(
        (p.gateway.tproxy.mark, p.gateway.tproxy.table),
        (0x1, 100),
        "today's routing stays the default"
    );
    let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
    v["gateway"] = serde_json::json!({"tproxy_mark": 16, "tproxy_table": 4242});
    let p = load_str(&v.to_string()).unwrap();
    assert_eq!((p.gateway.tproxy.mark, p.gateway.tproxy.table), (16, 4242));
    expect_err(
        |v| v["gateway"] = serde_json::json!({"tproxy_mark": 0}),
        "gateway.tproxy_mark",
        "must not be 0",
    );
    for table in [0, 253, 254, 255] {
        expect_err(
            |v| v["gateway"] = serde_json::json!({"tproxy_table": table}),
            "gateway.tproxy_table",
            "reserved routing table",
        );
    }
}

#[test]
fn modes_default_to_enforce_and_refusals_name_the_field() {
    let p = load_str(BASE).unwrap();
    assert_eq!(p.gateway.mode, crate::policy::Mode::Enforce);
    assert_eq!(p.gateway.mode_of(0), crate::policy::Mode::Enforce);
    let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
    v["gateway"] =
        serde_json::json!({"mode": "monitor", "instances": {"one": {"mode": "enforce"}}});
    let p = load_str(&v.to_string()).unwrap();
    let one = p.instances.iter().position(|i| i.id == "one").unwrap();
    assert_eq!(p.gateway.mode_of(one), crate::policy::Mode::Enforce);
    assert_eq!(p.gateway.mode_of(1 - one), crate::policy::Mode::Monitor);
    expect_err(
        |v| v["gateway"] = serde_json::json!({"mode": "audit"}),
        "gateway.mode",
        "not enforce or monitor",
    );
    expect_err(
        |v| v["gateway"] = serde_json::json!({"instances": {"one": {"mode": "Monitor"}}}),
        "gateway.instances.one.mode",
        "not enforce or monitor",
    );
}

#[test]
fn allowed_lines_default_to_debug_and_the_watch_to_on() {
    use crate::policy::LogLevel;
    let p = load_str(BASE).unwrap();
    assert_eq!(p.gateway.log_allowed, LogLevel::Debug);
    assert!(p.gateway.watch_config, "misp-guard reloads on change");
    let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
    v["gateway"] = serde_json::json!({"log_allowed": "off", "watch_config": false});
    let p = load_str(&v.to_string()).unwrap();
    assert_eq!(p.gateway.log_allowed, LogLevel::Off);
    assert!(!p.gateway.watch_config);
    for name in ["error", "warn", "info", "debug", "trace", "off"] {
        assert_eq!(LogLevel::parse(name).unwrap().as_str(), name);
    }
    expect_err(
        |v| v["gateway"] = serde_json::json!({"log_allowed": "INFO"}),
        "gateway.log_allowed",
        "is not off, error, warn, info, debug or trace",
    );
    expect_err(
        |v| v["gateway"] = serde_json::json!({"watch_config": "yes"}),
        "gateway.watch_config",
        "",
    );
}

#[test]
fn allowlist_sizes_are_counted_per_kind() {
    // check-config prints these, and the upstream TLS config for
    // allowlisted hosts is built only when the allowlist has an entry.
    let p = load_str(BASE).unwrap();
    assert!(p.allowlist_is_empty());
    assert_eq!((p.allow_urls_len(), p.allow_domains_len()), (0, 0));
    let with = |urls: serde_json::Value, domains: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
        v["allowlist"] = serde_json::json!({"urls": urls, "domains": domains});
        load_str(&v.to_string()).unwrap()
    };
    let p = with(
        serde_json::json!(["https://a.example/x", "https://b.example/y"]),
        serde_json::json!([]),
    );
    assert!(!p.allowlist_is_empty(), "urls alone make it non-empty");
    assert_eq!((p.allow_urls_len(), p.allow_domains_len()), (2, 0));
    let p = with(
        serde_json::json!([]),
        serde_json::json!(["c.example", "d.example", "e.example"]),
    );
    assert!(!p.allowlist_is_empty(), "domains alone make it non-empty");
    assert_eq!((p.allow_urls_len(), p.allow_domains_len()), (0, 3));
}
