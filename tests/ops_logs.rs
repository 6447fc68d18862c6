//! `--log-format json` and the journal: through the real binary, every log
//! line is one JSON object, and under systemd (stderr is the stream named
//! by JOURNAL_STREAM) lines carry no timestamp of their own.

mod support;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = json!({
        "allowlist": {"urls": [], "domains": []},
        "compartments_rules": {"can_reach": {"c1": ["c1"]}},
        "instances": {"a": instance_json("127.0.0.1", "a.test", 443, "c1")},
        "gateway": {"mode": "monitor"}
    });
    let path = dir.join("config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

#[test]
fn json_lines() {
    let dir = TempDir::new("logjson");
    let cfg = config(&dir.0);
    let listen = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let gw = Gateway::start(
        &[
            "--log-format",
            "json",
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--explicit",
            &listen,
        ],
        dir.0.join("gw.log"),
    );
    let logs = gw.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 2, "{logs}");
    for l in &lines {
        assert!(l["timestamp"].is_string(), "{l}");
        assert!(l["level"].is_string(), "{l}");
        assert!(l["message"].is_string(), "{l}");
    }
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .unwrap()
                .starts_with("instance a: MODE MONITOR")),
        "{logs}"
    );
}

#[test]
fn no_second_timestamp_in_the_journal() {
    let dir = TempDir::new("logjournal");
    let cfg = config(&dir.0);
    let listen = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let log = dir.0.join("journal.log");
    let err = std::fs::File::create(&log).unwrap();
    let m = err.metadata().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_misp-guard-gw"))
        .args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--explicit",
            &listen,
        ])
        .env("RUST_LOG", "info")
        .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(" ready") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains(" ready"), "{text}");
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        assert!(
            ["INFO", "WARN", "ERROR", "DEBUG", "TRACE"].contains(&first),
            "line starts with something else than its level: {line}"
        );
    }
}
