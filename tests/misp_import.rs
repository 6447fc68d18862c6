//! The rules of `docs/MISP-IMPORT.md`, each proven by its own cases.
//!
//! Every rule id the document defines must have a case file
//! `tests/misp_import/rules/<RULE-ID>.json` with at least one blocked case
//! (the attack, shaped as MISP would read it) and one allowed case (the
//! legitimate MISP 2.5 shape). All cases run through the `evaluate` CLI, the
//! same engine stages the gateway runs, in one batch. The case format is in
//! `tests/misp_import/README.md`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Map, Value};

const PUSHER_IP: &str = "192.0.2.10";
const RECEIVER_HOST: &str = "misp.restricted.example";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/misp_import")
}

/// One case, expanded into an evaluate flow and what it must decide.
struct Case {
    label: String,
    flow: Value,
    expect: Expect,
}

#[derive(Debug)]
enum Expect {
    Allow,
    Block {
        reason: String,
        status: u16,
        stage: Option<String>,
    },
}

fn body_fields(prefix: &str, v: &Map<String, Value>, out: &mut Map<String, Value>) {
    if let Some(j) = v.get("json") {
        out.insert(format!("{prefix}body"), Value::String(j.to_string()));
    }
    if let Some(b) = v.get("body") {
        out.insert(format!("{prefix}body"), b.clone());
    }
}

fn expand(rule: &str, file: &Path, case: &Value) -> Case {
    let c = case
        .as_object()
        .unwrap_or_else(|| panic!("{}: a case must be an object", file.display()));
    let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
    let label = format!("{rule} / {name}");
    let mut flow = Map::new();
    flow.insert("client_ip".into(), json!(PUSHER_IP));
    flow.insert("host".into(), json!(RECEIVER_HOST));
    flow.insert("port".into(), json!(443));
    if let Some(path) = c.get("push").and_then(Value::as_str) {
        flow.insert("method".into(), json!("POST"));
        flow.insert("path".into(), json!(path));
        flow.insert(
            "request_headers".into(),
            json!({"Content-Type": "application/json"}),
        );
        body_fields("request_", c, &mut flow);
    } else if let Some(path) = c.get("pull").and_then(Value::as_str) {
        flow.insert("method".into(), json!("GET"));
        flow.insert("path".into(), json!(path));
        flow.insert("request_headers".into(), json!({}));
    }
    if let Some(m) = c.get("method") {
        flow.insert("method".into(), m.clone());
    }
    if let Some(r) = c.get("response").and_then(Value::as_object) {
        let mut resp = Map::new();
        resp.insert(
            "status".into(),
            r.get("status").cloned().unwrap_or(json!(200)),
        );
        let mut headers = r
            .get("headers")
            .cloned()
            .unwrap_or(json!({}))
            .as_object()
            .cloned()
            .unwrap_or_default();
        if r.contains_key("json") {
            headers
                .entry("Content-Type")
                .or_insert(json!("application/json"));
        }
        resp.insert("headers".into(), Value::Object(headers));
        body_fields("", r, &mut resp);
        flow.insert("response".into(), Value::Object(resp));
    }
    if let Some(over) = c.get("flow").and_then(Value::as_object) {
        for (k, v) in over {
            flow.insert(k.clone(), v.clone());
        }
    }
    let expect = match c.get("expect") {
        Some(Value::String(s)) if s == "allow" => Expect::Allow,
        Some(Value::Object(e)) => Expect::Block {
            reason: e
                .get("block")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{label}: expect.block must be a string"))
                .to_string(),
            status: e.get("status").and_then(Value::as_u64).unwrap_or(403) as u16,
            stage: e.get("stage").and_then(Value::as_str).map(str::to_string),
        },
        other => panic!("{label}: expect must be \"allow\" or {{\"block\": …}}, got {other:?}"),
    };
    Case {
        label,
        flow: Value::Object(flow),
        expect,
    }
}

/// Rule ids defined in the spec: every `**R-…**` that opens a paragraph.
fn spec_rules() -> BTreeSet<String> {
    let spec =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/MISP-IMPORT.md"))
            .expect("docs/MISP-IMPORT.md");
    let mut ids = BTreeSet::new();
    for line in spec.lines() {
        let rest = line.trim_start();
        let Some(rest) = rest.strip_prefix("**R-") else {
            continue;
        };
        // `**R-ATTR-CAT** / **R-ATTR-TYPE** — …` defines two rules.
        for part in std::iter::once(rest).chain(rest.split("**R-").skip(1)) {
            let id: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '-')
                .collect();
            if !id.is_empty() {
                ids.insert(format!("R-{id}"));
            }
        }
    }
    ids
}

fn load_cases() -> (Vec<Case>, BTreeSet<String>) {
    let mut cases = Vec::new();
    let mut rules = BTreeSet::new();
    let mut files: Vec<_> = fs::read_dir(dir().join("rules"))
        .expect("tests/misp_import/rules")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let v: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let rule = v["rule"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no \"rule\"", file.display()))
            .to_string();
        assert_eq!(
            file.file_stem().unwrap().to_str().unwrap(),
            rule,
            "{}: the file is named after its rule",
            file.display()
        );
        let list = v["cases"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no \"cases\" list", file.display()));
        let before = cases.len();
        cases.extend(list.iter().map(|c| expand(&rule, &file, c)));
        let mine = &cases[before..];
        assert!(
            mine.iter()
                .any(|c| matches!(c.expect, Expect::Block { .. })),
            "{rule}: needs at least one blocked case (the attack)"
        );
        assert!(
            mine.iter().any(|c| matches!(c.expect, Expect::Allow)),
            "{rule}: needs at least one allowed case (MISP's own shape)"
        );
        rules.insert(rule);
    }
    (cases, rules)
}

fn evaluate(flows: &str) -> Vec<Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_misp-guard-gw"))
        .args(["evaluate", "--config"])
        .arg(dir().join("config.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run evaluate");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(flows.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("evaluate prints JSON lines"))
        .collect()
}

#[test]
fn every_rule_of_the_spec_has_cases_and_they_hold() {
    let (cases, covered) = load_cases();
    let missing: Vec<_> = spec_rules().difference(&covered).cloned().collect();
    assert!(
        missing.is_empty(),
        "rules of docs/MISP-IMPORT.md without a case file in tests/misp_import/rules: {missing:?}"
    );
    let flows: String = cases.iter().map(|c| format!("{}\n", c.flow)).collect();
    let answers = evaluate(&flows);
    assert_eq!(answers.len(), cases.len(), "one answer per flow");
    let mut failures = Vec::new();
    for (case, got) in cases.iter().zip(&answers) {
        let decision = got["decision"].as_str().unwrap_or("?");
        let ok = match &case.expect {
            Expect::Allow => decision == "allow",
            Expect::Block {
                reason,
                status,
                stage,
            } => {
                decision == "block"
                    && got["status"].as_u64() == Some(u64::from(*status))
                    && got["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains(reason.as_str()))
                    && stage
                        .as_deref()
                        .is_none_or(|s| got["stage"].as_str() == Some(s))
            }
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, got {}",
                case.label, case.expect, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn spec_rule_ids_are_found() {
    // The coverage check above is only as good as this parser.
    let ids = spec_rules();
    for id in ["R-EVENT-WRAP", "R-ATTR-CAT", "R-ATTR-TYPE", "R-OBJ-WRAP"] {
        assert!(ids.contains(id), "{id} not parsed from docs/MISP-IMPORT.md");
    }
}
