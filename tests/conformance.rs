//! misp-guard parity: all 107 push/pull scenarios and behaviour cases 1–15 of
//! `../shared/conformance/README.md`, run through the engine (and cases
//! 14–15 plus every scenario once more through the `evaluate` CLI).

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use misp_guard_gw::config;
use misp_guard_gw::engine::{self, Block, RequestHead, Response, Scheme};
use misp_guard_gw::policy::Policy;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Scenario {
    name: String,
    host: String,
    port: u16,
    url: String,
    method: String,
    client: Client,
    fixture_file: String,
    expected_status_code: u16,
    expected_logs: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Client {
    ip: String,
}

/// What a flow produced: final status and every log line.
struct Outcome {
    status: u16,
    logs: Vec<String>,
}

struct Flow<'a> {
    client_ip: &'a str,
    host: &'a str,
    port: u16,
    scheme: Scheme,
    method: &'a str,
    path: &'a str,
    request_body: &'a [u8],
    /// (headers, body) of a 200 upstream answer, if the flow gets that far.
    response: Option<(Headers, Vec<u8>)>,
}

type Headers = Vec<(String, String)>;

thread_local! {
    /// Bodies read as they arrived by `same_while_arriving`: (pushes,
    /// pulls), so a scenario run shows it compared some of each.
    static READ_AS_ARRIVED: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

fn json_headers() -> Headers {
    vec![("Content-Type".into(), "application/json".into())]
}

fn run(policy: &Policy, f: &Flow) -> Outcome {
    let mut logs = Vec::new();
    let blocked = |b: Block, mut logs: Vec<String>| {
        logs.extend(b.detail.clone());
        logs.push(b.log_line(f.method, f.path));
        Outcome {
            status: b.status,
            logs,
        }
    };
    let req_headers = json_headers();
    let head = RequestHead {
        client_ip: f.client_ip.parse::<IpAddr>().unwrap(),
        host: f.host,
        port: f.port,
        scheme: f.scheme.clone(),
        dst_ip: None,
        method: f.method,
        path: f.path,
        headers: req_headers.as_slice(),
    };
    let exchange = match engine::request_head(policy, &head) {
        Ok(x) => x,
        Err(b) => return blocked(b, logs),
    };
    logs.extend(exchange.note().map(str::to_string));
    if exchange.inspects_request_body() {
        let hs = req_headers.as_slice();
        let whole = engine::request_body(policy, &exchange, hs, f.request_body);
        let reader = |hs: &[(String, String)]| engine::request_body_reader(policy, &exchange, hs);
        same_while_arriving(policy, reader, hs, f.request_body, &whole);
        let event_push = engine::request_body_reader(policy, &exchange, hs).is_some();
        if event_push {
            READ_AS_ARRIVED.with(|c| c.set((c.get().0 + 1, c.get().1)));
        }
        // As MISP sends pushes over 1 KB to a receiver that reads them.
        for coding in ["gzip", "br"] {
            let mut c_headers = req_headers.clone();
            c_headers.push(("Content-Encoding".into(), coding.into()));
            let c_body = compress(coding, f.request_body);
            let c_whole = engine::request_body(policy, &exchange, c_headers.as_slice(), &c_body);
            same_while_arriving(policy, reader, c_headers.as_slice(), &c_body, &c_whole);
            if event_push {
                assert!(reader(c_headers.as_slice()).is_some(), "{coding}");
                assert_eq!(
                    c_whole.as_ref().map_err(|b| &b.reason),
                    whole.as_ref().map_err(|b| &b.reason),
                    "the same push, {coding}-compressed"
                );
            }
        }
        if let Err(b) = whole {
            return blocked(b, logs);
        }
    }
    if let Some((headers, body)) = &f.response {
        let resp = Response {
            status: 200,
            headers: headers.as_slice(),
            body,
        };
        let whole = engine::response(policy, &exchange, &resp);
        same_answer_while_arriving(policy, &exchange, headers, body, &whole);
        if let Err(b) = whole {
            return blocked(b, logs);
        }
    }
    Outcome { status: 200, logs }
}

/// A pulled event's answer read as it arrives
/// (`engine::response_body_reader`), plain and compressed (as a MISP behind
/// Apache's mod_deflate or mod_brotli sends it): the same verdict as the
/// whole-answer stage, reason included.
fn same_answer_while_arriving(
    policy: &Policy,
    exchange: &engine::Exchange,
    headers: &Headers,
    body: &[u8],
    whole: &Result<(), Block>,
) {
    let reader = |hs: &[(String, String)]| engine::response_body_reader(policy, exchange, 200, hs);
    let event_pull = reader(headers).is_some();
    if event_pull {
        READ_AS_ARRIVED.with(|c| c.set((c.get().0, c.get().1 + 1)));
    }
    same_while_arriving(policy, reader, headers, body, whole);
    for coding in ["gzip", "br"] {
        let mut c_headers = headers.clone();
        c_headers.push(("Content-Encoding".into(), coding.into()));
        let c_body = compress(coding, body);
        let c_resp = Response {
            status: 200,
            headers: c_headers.as_slice(),
            body: &c_body,
        };
        let c_whole = engine::response(policy, exchange, &c_resp);
        same_while_arriving(policy, reader, &c_headers, &c_body, &c_whole);
        if event_pull {
            assert!(reader(&c_headers).is_some(), "{coding}");
            assert_eq!(
                c_whole.as_ref().map_err(|b| &b.reason),
                whole.as_ref().map_err(|b| &b.reason),
                "the same answer, {coding}-compressed"
            );
        }
    }
}

/// The gateway reads a pushed event (`engine::request_body_reader`) and a
/// pulled one (`engine::response_body_reader`) as it arrives: fed in
/// pieces, the reader must end with the same verdict as the whole-body
/// stage, and block early only a body that stage blocks.
fn same_while_arriving(
    policy: &Policy,
    new_reader: impl Fn(&[(String, String)]) -> Option<engine::BodyReader>,
    hs: &[(String, String)],
    body: &[u8],
    whole: &Result<(), Block>,
) {
    for step in [1usize, 97, 4096, body.len().max(1)] {
        let Some(mut reader) = new_reader(hs) else {
            return;
        };
        let mut end = 0;
        while end < body.len() {
            end = (end + step).min(body.len());
            if let Some(b) = reader.feed(policy, &body[..end]) {
                let w = whole
                    .as_ref()
                    .expect_err("an early block of a body the stage allows");
                assert_eq!(b.status, w.status, "{}", b.reason);
            }
        }
        let finished = reader.finish(policy, hs, body);
        assert_eq!(
            finished.as_ref().map_err(|b| (b.status, &b.reason)),
            whole.as_ref().map_err(|b| (b.status, &b.reason)),
            "read as it arrived in steps of {step}"
        );
    }
}

/// `body` compressed as MISP compresses a push: gzip level 1, or brotli
/// quality 1 in text mode (`ServerSyncTool::pushEvent`).
fn compress(coding: &str, body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let params = brotli::enc::BrotliEncoderParams {
                quality: 1,
                mode: brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_TEXT,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &body[..], &mut out, &params).unwrap();
            out
        }
        other => panic!("no compressor for {other}"),
    }
}

fn load_policy(dir: &Path) -> Policy {
    config::load(&dir.join("test_config.json")).expect("conformance config loads")
}

fn scenarios(dir: &Path, file: &str) -> Vec<Scenario> {
    serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap()
}

fn check(name: &str, out: &Outcome, status: u16, expected_logs: &[&str]) -> Result<(), String> {
    if out.status != status {
        return Err(format!(
            "{name}: status {} != expected {status}; logs {:?}",
            out.status, out.logs
        ));
    }
    for want in expected_logs {
        if !out.logs.iter().any(|l| l.contains(want)) {
            return Err(format!("{name}: log {want:?} missing; got {:?}", out.logs));
        }
    }
    Ok(())
}

#[test]
fn scenarios_push_and_pull() {
    let Some(dir) = common::conformance_dir() else {
        return;
    };
    let policy = load_policy(&dir);
    let mut failures = Vec::new();
    let mut count = 0;
    for (file, push) in [
        ("test_push_scenarios.json", true),
        ("test_pull_scenarios.json", false),
    ] {
        for s in scenarios(&dir, file) {
            count += 1;
            let fixture = std::fs::read(common::fixture_path(&dir, &s.fixture_file)).unwrap();
            let flow = Flow {
                client_ip: &s.client.ip,
                host: &s.host,
                port: s.port,
                scheme: Scheme::Https,
                method: &s.method,
                path: &s.url,
                request_body: if push { &fixture } else { b"" },
                // misp-guard's push scenarios decide on the request only
                // (misp-guard never reads a push's answer; this gateway
                // does, see tests/proxy_loopback.rs); pulls answer with the
                // fixture.
                response: (!push).then(|| (json_headers(), fixture.clone())),
            };
            let out = run(&policy, &flow);
            let logs: Vec<&str> = s.expected_logs.iter().map(String::as_str).collect();
            if let Err(e) = check(&s.name, &out, s.expected_status_code, &logs) {
                failures.push(e);
            }
        }
    }
    assert_eq!(count, 107, "expected 107 scenarios");
    let (pushes, pulls) = READ_AS_ARRIVED.with(|c| c.get());
    eprintln!("read as they arrived, in pieces and whole, plain, gzip and br: {pushes} pushes, {pulls} pulled events");
    assert_eq!(
        (pushes, pulls),
        (53, 23),
        "event bodies read as they arrived"
    );
    assert!(
        failures.is_empty(),
        "{} of {count} scenarios failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const EVENT_PATH: &str = "/events/view/385283a1-b5e0-4e10-a532-dce11c365a56/deleted[]:0/deleted[]:1/excludeGalaxy:1/includeEventCorrelations:0/includeFeedCorrelations:0/includeWarninglistHits:0/excludeLocalTags:1";

fn flow<'a>(client_ip: &'a str, host: &'a str, method: &'a str, path: &'a str) -> Flow<'a> {
    Flow {
        client_ip,
        host,
        port: 443,
        scheme: Scheme::Https,
        method,
        path,
        request_body: b"",
        response: None,
    }
}

#[test]
fn behaviour_cases_1_to_13() {
    let Some(dir) = common::conformance_dir() else {
        return;
    };
    let policy = load_policy(&dir);
    let mut failures = Vec::new();
    let mut case = |n: u32, out: Outcome, status: u16, logs: &[&str]| {
        if let Err(e) = check(&format!("case {n}"), &out, status, logs) {
            failures.push(e);
        }
    };
    let minimal0 = br#"{"minimal":0, "published":1}"#;

    let f = Flow {
        request_body: minimal0,
        ..flow("20.0.0.2", "instance1-comp1.com", "POST", "/events/index")
    };
    case(1, run(&policy, &f), 403, &[
        "{'minimal': 1, 'published': 1} is required for /events/index requests",
        "request blocked: [POST]/events/index - {'minimal': 1, 'published': 1} is required for /events/index requests",
    ]);
    let f = Flow {
        request_body: minimal0,
        ..flow(
            "20.0.0.2",
            "instance1-comp1.com",
            "POST",
            "/galaxy_clusters/restSearch",
        )
    };
    case(2, run(&policy, &f), 403, &[
        "request blocked: [POST]/galaxy_clusters/restSearch - {'minimal': 1, 'published': 1} is required for /galaxy_clusters/restSearch requests",
    ]);
    case(
        3,
        run(
            &policy,
            &flow("20.0.0.2", "instance1-comp1.com", "GET", "/users"),
        ),
        403,
        &[
            "rejecting non allowed request to /users",
            "request blocked: [GET]/users - endpoint not allowed",
        ],
    );
    case(4, run(&policy, &flow("123.123.123.123", "snort-org-site.s3.amazonaws.com", "GET", "/torlist/?exit")), 403, &[
        "request blocked: [GET]/torlist/?exit - source host 123.123.123.123 does not exist in instances hosts mapping",
    ]);
    let f = Flow {
        response: Some((vec![], b"hello".to_vec())),
        ..flow(
            "20.0.0.2",
            "snort-org-site.s3.amazonaws.com",
            "GET",
            "/test.txt",
        )
    };
    case(
        5,
        run(&policy, &f),
        200,
        &["domain snort-org-site.s3.amazonaws.com was allowed by the allowlist"],
    );
    let f = Flow {
        scheme: Scheme::Http,
        ..flow("123.123.123.123", "www.dan.me.uk", "GET", "/torlist/?exit")
    };
    case(
        6,
        run(&policy, &f),
        403,
        &["source host 123.123.123.123 does not exist in instances hosts mapping"],
    );
    let f = Flow {
        scheme: Scheme::Http,
        response: Some((vec![], b"1.2.3.4\n".to_vec())),
        ..flow("20.0.0.2", "www.dan.me.uk", "GET", "/torlist/?exit")
    };
    case(
        7,
        run(&policy, &f),
        200,
        &["url http://www.dan.me.uk:443/torlist/?exit was allowed by the allowlist"],
    );
    let f = Flow {
        response: Some((vec![], Vec::new())),
        ..flow(
            "20.0.0.2",
            "instance1-comp1.com",
            "HEAD",
            "/events/view/385283a1-b5e0-4e10-a532-dce11c365a56",
        )
    };
    case(8, run(&policy, &f), 200, &[]);
    let f = Flow {
        response: Some((vec![], Vec::new())),
        ..flow("20.0.0.2", "instance1-comp1.com", "GET", EVENT_PATH)
    };
    case(
        9,
        run(&policy, &f),
        403,
        &[&format!(
            "request blocked: [GET]{EVENT_PATH} - invalid JSON body"
        )],
    );
    case(10, run(&policy, &flow("90.0.0.1", "instance1-comp1.com", "GET", EVENT_PATH)), 403, &[&format!(
        "request blocked: [GET]{EVENT_PATH} - source host 90.0.0.1 does not exist in instances hosts mapping"
    )]);
    case(11, run(&policy, &flow("10.0.0.1", "instance99-comp1.com", "GET", EVENT_PATH)), 403, &[&format!(
        "request blocked: [GET]{EVENT_PATH} - destination host instance99-comp1.com does not exist in instances hosts mapping"
    )]);
    let f = Flow {
        port: 4444,
        ..flow(
            "20.0.0.2",
            "instance1-comp1.com",
            "GET",
            "/users/view/me.json",
        )
    };
    case(
        12,
        run(&policy, &f),
        403,
        &["request blocked: [GET]/users/view/me.json - destination port is not allowed"],
    );
    for fixture in [
        "test_event_xuserorguuid-blocked_sharing_group.json",
        "test_event_xuserorguuid-attribute_blocked_sharing_group.json",
        "test_event_xuserorguuid-object-attribute_blocked_sharing_group.json",
    ] {
        let body = std::fs::read(dir.join("fixtures").join(fixture)).unwrap();
        let mut headers = json_headers();
        headers.push((
            "X-UserOrgUUID".into(),
            "8b9661a3-8544-4f8d-94be-cd7ebe87e922".into(),
        ));
        let f = Flow {
            response: Some((headers, body)),
            ..flow("20.0.0.2", "instance1-comp1.com", "GET", EVENT_PATH)
        };
        case(13, run(&policy, &f), 403, &[&format!(
            "request blocked: [GET]{EVENT_PATH} - user with organisation uuid: 8b9661a3-8544-4f8d-94be-cd7ebe87e922 (X-UserOrgUUID) not in sharing group"
        )]);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_misp-guard-gw"))
}

#[test]
fn behaviour_case_14_missing_config_refuses_to_start() {
    for sub in ["check-config", "evaluate"] {
        let out = bin()
            .args([sub, "--config", "/nonexistent/misp-guard/config.json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("/nonexistent/misp-guard/config.json")
                && err.contains("cannot read config file"),
            "{sub}: {err}"
        );
    }
}

#[test]
fn behaviour_case_15_invalid_config_refuses_to_start() {
    let Some(dir) = common::conformance_dir() else {
        return;
    };
    let path = dir.join("fixtures/test_invalid_config.json");
    for sub in ["check-config", "evaluate"] {
        let out = bin().arg(sub).arg("--config").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("test_invalid_config.json") && err.contains("missing field `allowlist`"),
            "{sub}: {err}"
        );
    }
}

/// Every scenario once more through `evaluate`, the contract other tooling
/// relies on: one verdict line per flow line, in order.
#[test]
fn scenarios_through_evaluate_cli() {
    let Some(dir) = common::conformance_dir() else {
        return;
    };
    let mut lines = Vec::new();
    let mut expected = Vec::new();
    for (file, push) in [
        ("test_push_scenarios.json", true),
        ("test_pull_scenarios.json", false),
    ] {
        for s in scenarios(&dir, file) {
            let fixture = common::fixture_path(&dir, &s.fixture_file);
            let fixture = fixture.to_str().unwrap();
            let mut flow = serde_json::json!({
                "client_ip": s.client.ip, "host": s.host, "port": s.port,
                "method": s.method, "path": s.url,
            });
            if push {
                flow["request_headers"] = serde_json::json!({"Content-Type": "application/json"});
                flow["request_body_file"] = fixture.into();
            } else {
                flow["response"] = serde_json::json!({"status": 200, "headers": {"Content-Type": "application/json"}, "body_file": fixture});
            }
            lines.push(flow.to_string());
            expected.push(s);
        }
    }
    lines.push("not json".into());
    let tmp = std::env::temp_dir().join(format!("mgw-conformance-{}.jsonl", std::process::id()));
    std::fs::write(&tmp, lines.join("\n") + "\n").unwrap();
    let out = bin()
        .args(["evaluate", "--config"])
        .arg(dir.join("test_config.json"))
        .arg(&tmp)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tmp);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an error line makes the exit code 1"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let verdicts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        verdicts.len(),
        expected.len() + 1,
        "one output line per input line"
    );
    for (v, s) in verdicts.iter().zip(&expected) {
        if s.expected_status_code == 200 {
            assert_eq!(v["decision"], "allow", "{}: {v}", s.name);
            assert_eq!(v["status"], serde_json::Value::Null);
            assert_eq!(v["reason"], serde_json::Value::Null);
        } else {
            assert_eq!(v["decision"], "block", "{}: {v}", s.name);
            assert_eq!(v["status"], s.expected_status_code, "{}", s.name);
            for want in &s.expected_logs {
                assert!(
                    v["log"].as_str().unwrap().contains(want.as_str()),
                    "{}: {v}",
                    s.name
                );
                let reason = want.rsplit(" - ").next().unwrap();
                assert_eq!(v["reason"], reason, "{}", s.name);
            }
        }
    }
    let last = verdicts.last().unwrap();
    assert_eq!(last["decision"], "error");
    assert!(last["reason"]
        .as_str()
        .unwrap()
        .starts_with(&format!("line {}: ", expected.len() + 1)));
    assert_eq!(
        last.as_object().unwrap().len(),
        2,
        "error lines carry decision and reason only"
    );
}
