//! `misp-guard-gw evaluate --config FILE [FLOWS.jsonl]`: the offline "would
//! this leave?" tool. Each input line is one flow (JSON); each output line is
//! its verdict, in order. It runs the engine's stages exactly as the gateway
//! does once HTTP framing is done (Content-Encoding decoding included).
//!
//! Output contract (README "evaluate"):
//! `{"decision":"allow"|"block","stage":"request"|"response","status":403|null,"reason":"..."|null,"log":"..."|null}`
//! or, for a line that is not a valid flow, `{"decision":"error","reason":"line N: ..."}`
//! (processing continues; the exit code is then 1).

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::config::{self, schema::UniqueMap};
use crate::engine::{self, Block, RequestHead, Response, Scheme};
use crate::policy::Policy;
use crate::vocab;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Flow {
    client_ip: String,
    host: String,
    port: u16,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    dst_ip: Option<String>,
    method: String,
    path: String,
    #[serde(default)]
    request_headers: Option<UniqueMap<HeaderValue>>,
    #[serde(default)]
    request_body: Option<String>,
    #[serde(default)]
    request_body_base64: Option<String>,
    #[serde(default)]
    request_body_file: Option<String>,
    #[serde(default)]
    response: Option<FlowResponse>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowResponse {
    status: u16,
    #[serde(default)]
    headers: Option<UniqueMap<HeaderValue>>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    body_file: Option<String>,
}

/// A header value, or several values of the same header in order.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HeaderValue {
    One(String),
    Many(Vec<String>),
}

/// One verdict line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        stage: &'static str,
    },
    Block {
        stage: &'static str,
        block: Block,
        log: String,
    },
    Error(String),
}

/// The output line, fields in the documented order.
#[derive(Serialize)]
struct Line<'a> {
    decision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Option<u16>>,
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<Option<&'a str>>,
}

impl Verdict {
    pub fn to_json(&self) -> String {
        let line = match self {
            Verdict::Allow { stage } => Line {
                decision: "allow",
                stage: Some(stage),
                status: Some(None),
                reason: None,
                log: Some(None),
            },
            Verdict::Block { stage, block, log } => Line {
                decision: "block",
                stage: Some(stage),
                status: Some(Some(block.status)),
                reason: Some(&block.reason),
                log: Some(Some(log)),
            },
            Verdict::Error(reason) => Line {
                decision: "error",
                stage: None,
                status: None,
                reason: Some(reason),
                log: None,
            },
        };
        serde_json::to_string(&line).unwrap_or_default()
    }
}

pub fn run(config_path: &Path, flows: Option<&Path>) -> ExitCode {
    let policy = match config::load(config_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (reader, base): (Box<dyn BufRead>, PathBuf) = match flows {
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => (
                Box::new(BufReader::new(f)),
                path.parent().map(Path::to_path_buf).unwrap_or_default(),
            ),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => (
            Box::new(BufReader::new(std::io::stdin().lock())),
            PathBuf::from("."),
        ),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = false;
    for (i, line) in reader.split(b'\n').enumerate() {
        let verdict = match line {
            Ok(line) => evaluate_line(&policy, i + 1, &line, &base),
            Err(e) => {
                eprintln!("error: reading flows: {e}");
                return ExitCode::FAILURE;
            }
        };
        match &verdict {
            Verdict::Error(reason) => {
                failed = true;
                tracing::error!("{reason}");
            }
            Verdict::Block { log, block, .. } => {
                if let Some(detail) = &block.detail {
                    tracing::error!("{detail}");
                }
                tracing::error!("{log}");
            }
            Verdict::Allow { .. } => {}
        }
        if writeln!(out, "{}", verdict.to_json()).is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() || failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Decides one input line (1-based `n`); `base` resolves relative file paths.
pub fn evaluate_line(policy: &Policy, n: usize, line: &[u8], base: &Path) -> Verdict {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match parse_flow(line, base) {
        Ok(flow) => decide(policy, &flow),
        Err(e) => Verdict::Error(format!("line {n}: {e}")),
    }
}

/// A flow with everything resolved (addresses parsed, bodies loaded).
struct Resolved {
    client_ip: IpAddr,
    dst_ip: Option<IpAddr>,
    scheme: Scheme,
    host: String,
    port: u16,
    method: String,
    path: String,
    request_headers: Headers,
    request_body: Vec<u8>,
    response: Option<ResolvedResponse>,
}

type Headers = Vec<(String, String)>;

struct ResolvedResponse {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

fn parse_flow(line: &[u8], base: &Path) -> Result<Resolved, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err("empty line is not a flow".into());
    }
    let flow: Flow = serde_json::from_slice(line).map_err(|e| format!("invalid flow: {e}"))?;
    let ip = |field: &str, s: &str| {
        vocab::parse_ip(s).ok_or_else(|| format!("{field}: {s:?} is not an IP address"))
    };
    let client_ip = ip("client_ip", &flow.client_ip)?;
    let dst_ip = flow
        .dst_ip
        .as_deref()
        .map(|s| ip("dst_ip", s))
        .transpose()?;
    let scheme = match flow.scheme.as_deref() {
        None => Scheme::Https,
        Some(s) => Scheme::parse(s).ok_or_else(|| format!("scheme: {s:?} is not http or https"))?,
    };
    if flow.port == 0 {
        return Err("port: must be 1-65535".into());
    }
    // Any token an HTTP parser accepts is a flow; whether the gateway lets
    // that spelling through (`get`, `TRACE`) is the engine's decision, so
    // it answers here as it does live.
    if flow.method.is_empty() || !flow.method.bytes().all(is_token_char) {
        return Err(format!("method: {:?} is not an HTTP method", flow.method));
    }
    let request_body = body(
        "request_body",
        flow.request_body,
        flow.request_body_base64,
        flow.request_body_file,
        base,
    )?;
    let response = match flow.response {
        None => None,
        Some(r) => {
            let body = body("response.body", r.body, r.body_base64, r.body_file, base)?;
            Some(ResolvedResponse {
                status: r.status,
                headers: headers(r.headers),
                body,
            })
        }
    };
    Ok(Resolved {
        client_ip,
        dst_ip,
        scheme,
        host: flow.host,
        port: flow.port,
        method: flow.method,
        path: flow.path,
        request_headers: headers(flow.request_headers),
        request_body,
        response,
    })
}

/// RFC 9110 §5.6.2 `tchar`: what a method may be spelled with.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn headers(map: Option<UniqueMap<HeaderValue>>) -> Headers {
    let mut out = Vec::new();
    for (name, value) in map.map(|m| m.0).unwrap_or_default() {
        match value {
            HeaderValue::One(v) => out.push((name, v)),
            HeaderValue::Many(vs) => out.extend(vs.into_iter().map(|v| (name.clone(), v))),
        }
    }
    out
}

fn body(
    field: &str,
    text: Option<String>,
    b64: Option<String>,
    file: Option<String>,
    base: &Path,
) -> Result<Vec<u8>, String> {
    match (text, b64, file) {
        (None, None, None) => Ok(Vec::new()),
        (Some(t), None, None) => Ok(t.into_bytes()),
        (None, Some(b), None) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| format!("{field}_base64: {e}")),
        (None, None, Some(f)) => {
            let path = base.join(&f);
            std::fs::read(&path).map_err(|e| format!("{field}_file: {}: {e}", path.display()))
        }
        _ => Err(format!(
            "{field}: give at most one of the text, base64 and file forms"
        )),
    }
}

fn decide(policy: &Policy, f: &Resolved) -> Verdict {
    let blocked = |stage, block: Block| Verdict::Block {
        stage,
        log: block.log_line(&f.method, &f.path),
        block,
    };
    let head = RequestHead {
        client_ip: f.client_ip,
        host: &f.host,
        port: f.port,
        scheme: f.scheme.clone(),
        dst_ip: f.dst_ip,
        method: &f.method,
        path: &f.path,
        headers: f.request_headers.as_slice(),
    };
    let exchange = match engine::request_head(policy, &head) {
        Ok(x) => x,
        Err(b) => return blocked("request", b),
    };
    if let Some(note) = exchange.note() {
        tracing::info!("{note}");
    }
    if let Err(b) = engine::request_body_size(policy, f.request_body.len() as u64) {
        return blocked("request", b);
    }
    if exchange.inspects_request_body() {
        if let Err(b) = engine::request_body(
            policy,
            &exchange,
            f.request_headers.as_slice(),
            &f.request_body,
        ) {
            return blocked("request", b);
        }
    }
    let Some(r) = &f.response else {
        return Verdict::Allow { stage: "request" };
    };
    let resp = Response {
        status: r.status,
        headers: r.headers.as_slice(),
        body: &r.body,
    };
    match engine::response(policy, &exchange, &resp) {
        Ok(()) => Verdict::Allow { stage: "response" },
        Err(b) => blocked("response", b),
    }
}
