//! One client connection after capture and TLS: read each request, decide
//! it with the engine, forward it, decide the response, answer — in order,
//! one exchange at a time (pipelined requests wait in the read buffer).
//!
//! The phases, pingora-style, each with one obvious place for the filter:
//! 1. request head  → `engine::request_head` (nothing sent upstream yet)
//! 2. request body  → buffered and `engine::request_body` when the policy
//!    reads it, else streamed; a blocked push never reaches the server,
//!    not even its head
//! 3. response head → read from upstream
//! 4. response body → buffered and `engine::response` when the policy reads
//!    it (a block answers 403 with none of the upstream body), else streamed
//!
//! Bodies are forwarded as the original bytes (Content-Encoding intact) with
//! framing the gateway writes itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::binding::Target;
use super::buffer_budget::{OverBuffered, Reservation};
use super::respond;
use super::state::{Shared, TlsState};
use super::stream::BoxIo;
use super::trail::{LogFields, Trail};
use crate::engine::{self, Block, Exchange, RequestHead as EngineHead, Response, Sanitized};
use crate::http::head::{write_head, HeadLimits, Headers, RequestHead, Version};
use crate::http::io::{HttpError, HttpIo};
use crate::http::rate::MinRate;
use crate::http::{request_framing, response_framing, Framing};
use crate::ops::audit::Stage;
use crate::policy::{InstanceId, ListenMode, Mode, Policy};
use crate::vocab::{split_host_port, Scheme};

/// How large a request or response head may be under `policy`.
pub fn head_limits(policy: &Policy) -> HeadLimits {
    // Both limits are bounded at load (config::compile_limits).
    HeadLimits {
        max_bytes: policy.limits.max_header_bytes as usize,
        max_fields: policy.limits.max_header_count as usize,
    }
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus
/// the framing and expectation headers the gateway rewrites itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];

fn strip_hop_by_hop(h: &Headers) -> Headers {
    let listed: Vec<String> = h
        .get_all("connection")
        .flat_map(|v| v.split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .collect();
    Headers(
        h.0.iter()
            .filter(|(n, _)| {
                let n = n.to_ascii_lowercase();
                !HOP_BY_HOP.contains(&n.as_str()) && !listed.contains(&n)
            })
            .cloned()
            .collect(),
    )
}

/// Does the client want the connection kept after this exchange?
fn client_keeps_alive(h: &RequestHead) -> bool {
    match h.version {
        Version::Http11 => !h.headers.has_token("connection", "close"),
        Version::Http10 => h.headers.has_token("connection", "keep-alive"),
    }
}

/// Where a request goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UpstreamKey {
    host: String,
    port: u16,
    instance: Option<InstanceId>,
}

struct Upstream {
    key: UpstreamKey,
    io: HttpIo<BoxIo>,
}

/// Why an exchange ended the connection.
enum End {
    /// Close quietly (client gone, shutdown, or an answer was already sent).
    Close,
}

pub async fn serve(
    shared: Arc<Shared>,
    target: Target,
    client: BoxIo,
    mut first: Option<RequestHead>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client = HttpIo::new(client);
    let mut upstream: Option<Upstream> = None;
    let mut served = 0u64;
    loop {
        // Each exchange is decided under one snapshot of policy and TLS.
        let snap = shared.snapshot();
        let policy = &snap.policy;
        let t = policy.gateway.timeouts;
        client.set_read_timeout(t.body);
        client.set_body_min_rate(MinRate {
            bytes_per_sec: t.body_min_rate,
            grace: t.body_min_rate_grace,
        });
        let head = match first.take() {
            Some(h) => h,
            None => {
                // The first head must come promptly; later ones may wait
                // for the idle timeout (keep-alive).
                let wait = if served == 0 { t.request_head } else { t.idle };
                let read =
                    tokio::time::timeout(wait, client.read_request_head(head_limits(policy)));
                tokio::select! {
                    r = read => match r {
                        Ok(Ok(Some(h))) => h,
                        Ok(Ok(None)) => return,
                        Ok(Err(e)) => {
                            tracing::warn!(client = %target.client_ip(), "bad request: {e}");
                            let answer = respond::refusal("", e.status(), &e.to_string(), "");
                            let _ = client.write_all(&answer).await;
                            return;
                        }
                        Err(_) => {
                            if served == 0 || client.has_buffered() {
                                let answer = respond::refusal("", 408, "request head timed out", "");
                                let _ = client.write_all(&answer).await;
                            }
                            return;
                        }
                    },
                    _ = shutdown.changed() => return,
                }
            }
        };
        served += 1;
        match exchange(
            &shared,
            policy,
            &snap.tls,
            &target,
            &mut client,
            &mut upstream,
            head,
        )
        .await
        {
            Ok(true) => continue,
            Ok(false) | Err(End::Close) => {
                let _ = client.io.shutdown().await;
                linger(&mut client.io).await;
                return;
            }
        }
    }
}

/// Lingering close: after answering (often an error sent before the request
/// body was read) drain what the client still sends for a moment, so the
/// kernel does not reset the connection and destroy the answer in flight.
async fn linger(io: &mut BoxIo) {
    use tokio::io::AsyncReadExt;
    let drain = async {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0usize;
        while total < 4 << 20 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// Request fields once the target form and Host are understood.
struct Parsed {
    /// Host the engine decides on.
    host: String,
    port: u16,
    path: String,
    scheme: Scheme,
}

/// Where the request goes. Whether its Host header names that destination
/// is the engine's decision (`engine::protocol::host_header`), taken with
/// the same reason by `evaluate`.
fn parse_target(target: &Target, head: &RequestHead) -> Result<Parsed, (u16, String)> {
    let bad = |why: &str| (400, why.to_string());
    let hosts: Vec<&[u8]> = head.headers.get_all("host").collect();
    let host_header = match hosts.as_slice() {
        [] if head.version == Version::Http10 => None,
        [h] => Some(
            std::str::from_utf8(h)
                .ok()
                .and_then(split_host_port)
                .ok_or_else(|| bad("invalid Host header"))?
                .0,
        ),
        [] => return Err(bad("missing Host header")),
        _ => return Err(bad("several Host headers")),
    };
    let scheme = if target.client_tls() {
        Scheme::Https
    } else {
        Scheme::Http
    };
    if target.absolute_form() {
        let rest = head.target.strip_prefix("http://").ok_or_else(|| {
            bad("explicit proxy requests must be CONNECT or absolute-form http://")
        })?;
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let (host, port) =
            split_host_port(authority).ok_or_else(|| bad("invalid request target"))?;
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        return Ok(Parsed {
            host,
            port: port.unwrap_or(80),
            path,
            scheme: Scheme::Http,
        });
    }
    if !head.target.starts_with('/') {
        return Err(bad("request target must be origin-form"));
    }
    let host = match (target.bound_host(), host_header) {
        (Some(bound), _) => bound.to_string(),
        (None, Some(h)) => h,
        (None, None) => match target.orig_dst() {
            Some(dst) => dst.ip().to_string(),
            None => return Err(bad("missing Host header")),
        },
    };
    Ok(Parsed {
        host,
        port: target.port(),
        path: head.target.clone(),
        scheme,
    })
}

/// One request/response exchange. Ok(true): keep the connection.
#[allow(clippy::too_many_arguments)]
async fn exchange(
    shared: &Shared,
    policy: &Policy,
    tls: &TlsState,
    target: &Target,
    client: &mut HttpIo<BoxIo>,
    upstream: &mut Option<Upstream>,
    head: RequestHead,
) -> Result<bool, End> {
    let t = policy.gateway.timeouts;
    let method = head.method.clone();
    // The audit line of this exchange, written when it ends (however).
    // (A mutex, not a RefCell: the exchange future must be Send; it is
    // never contended.)
    let trail = Mutex::new(Trail::new(
        shared.audit.as_deref(),
        &shared.metrics,
        policy,
        target,
        &method,
        &head.target,
    ));
    let tr = || trail.lock().unwrap_or_else(|e| e.into_inner());
    // Every refusal below is logged as a block and answered as a MISP API
    // error carrying the same reason (see `respond`).
    let refuse = |status: u16, reason: &str, path: &str| {
        let b = Block::with_status(status, reason);
        tracing::warn!(client = %target.client_ip(), "{}", b.log_line(&method, path));
        tr().block(status, reason);
        respond::refusal(&method, status, reason, path)
    };
    let blocked = |b: &Block, path: &str| {
        log_block(target, b, &method, path, &tr().log_fields());
        tr().block(b.status, &b.reason);
        respond::refusal(&method, b.status, &b.reason, path)
    };
    // Failures that are not decisions (upstream unreachable, timed out) are
    // logged where they happen; the answer names them the same way.
    let failed = |status: u16, why: &str, path: &str| {
        tr().failed(status, why);
        respond::refusal(&method, status, why, path)
    };
    // A body the memory budget cannot hold: shed with 503 + Retry-After,
    // audited as a block (nothing was forwarded), logged rate-limited (a
    // burst of large syncs must not flood the journal).
    let over_budget = |e: &OverBuffered, path: &str| {
        let reason = e.to_string();
        if shared.may_log_refusal("budget") {
            let b = Block::with_status(503, reason.clone());
            tracing::warn!(client = %target.client_ip(), "{}", b.log_line(&method, path));
        }
        tr().block(503, &reason);
        respond::busy(&method, &reason, path)
    };
    let buffered_limit = policy.limits.max_buffered_bytes;

    // Phase 1: request head. The HTTP-level refusals win over a target
    // that cannot be interpreted, so a nested `CONNECT host:port` is refused
    // as such (as `evaluate` refuses it) rather than as a malformed target;
    // `engine::request_head` applies them again for the decision itself.
    let protocol = engine::protocol::check(&method, head.headers.as_slice());
    let p = match (parse_target(target, &head), protocol) {
        (Ok(p), Ok(())) => {
            tr().path(&p.path);
            p
        }
        (Ok(p), Err(b)) => {
            let _ = client.write_all(&blocked(&b, &p.path)).await;
            return Err(End::Close);
        }
        (Err(_), Err(b)) => {
            let _ = client.write_all(&blocked(&b, &head.target)).await;
            return Err(End::Close);
        }
        (Err((status, why)), Ok(())) => {
            let _ = client.write_all(&refuse(status, &why, &head.target)).await;
            return Err(End::Close);
        }
    };
    // Upgrades, nested CONNECT, the method's spelling and `Expect` are
    // refused by the engine (`engine::protocol`), as `evaluate` does; an
    // allowed head may only expect `100-continue`, answered below.
    let expects_continue = head.headers.contains("expect");
    let engine_head = EngineHead {
        client_ip: target.client_ip(),
        host: &p.host,
        port: p.port,
        scheme: p.scheme.clone(),
        dst_ip: target.orig_dst().map(|d| d.ip()),
        method: &method,
        path: &p.path,
        headers: head.headers.as_slice(),
    };
    let exchange = match engine::request_head(policy, &engine_head) {
        Ok(x) => {
            tr().exchange(policy, &x);
            x
        }
        Err(b) => {
            let _ = client.write_all(&blocked(&b, &p.path)).await;
            return Err(End::Close);
        }
    };
    if let Some(note) = exchange.note() {
        tracing::info!(client = %target.client_ip(), "{note}");
    }
    let framing = match request_framing(&head) {
        Ok(f) => f,
        Err(e) => {
            let _ = client
                .write_all(&refuse(e.status(), &e.to_string(), &p.path))
                .await;
            return Err(End::Close);
        }
    };
    let max_body = policy.limits.max_body_bytes;
    if let Framing::Length(n) = framing {
        // Refuse a declared oversize body before asking for it.
        if let Err(b) = engine::request_body_size(policy, n) {
            let _ = client.write_all(&blocked(&b, &p.path)).await;
            return Err(End::Close);
        }
    }
    // The request body's share of the buffer budget. A declared length is
    // reserved before anything is asked of the client (no 100 Continue for
    // a body that cannot be held); the answer comes first and the unread
    // body is drained, so the client reads a 503, not a reset.
    let mut request_hold = shared.buffers.reservation();
    if let (true, Framing::Length(n)) = (exchange.inspects_request_body(), framing) {
        if let Err(e) = request_hold.grow_to(n, buffered_limit) {
            let _ = client.write_all(&over_budget(&e, &p.path)).await;
            if !expects_continue {
                let mut sink = tokio::io::sink();
                let drain = client.copy_body(b"", framing, n, &mut sink, false);
                let _ = tokio::time::timeout(t.body, drain).await;
            }
            return Err(End::Close);
        }
    }
    if expects_continue && framing != Framing::None {
        // Answer the expectation ourselves: the server never sees it.
        if client.write_all(respond::CONTINUE).await.is_err() {
            return Err(End::Close);
        }
    }

    // Phase 2: request body.
    tr().stage(Stage::RequestBody);
    // A push let through in monitor mode: its answer (the event as the
    // server stored it) is monitored too, or the push would still fail.
    let mut monitored_push = false;
    let inspected_body = if exchange.inspects_request_body() {
        let mut over = None;
        let read = client.read_body_granted(framing, max_body, |n| {
            grant(&mut request_hold, n, buffered_limit, &mut over)
        });
        let body = match read.await {
            Ok(b) => b,
            Err(HttpError::NotGranted) => {
                if let Some(e) = over {
                    let _ = client.write_all(&over_budget(&e, &p.path)).await;
                }
                return Err(End::Close);
            }
            Err(e) => {
                let _ = client
                    .write_all(&refuse(e.status(), &e.to_string(), &p.path))
                    .await;
                return Err(End::Close);
            }
        };
        {
            let mut g = tr();
            g.request_bytes(body.len() as u64);
            if g.enabled() {
                let hs = head.headers.as_slice();
                g.carried(engine::carried::request(policy, &exchange, hs, &body));
            }
        }
        let started = Instant::now();
        let verdict = engine::request_body(policy, &exchange, head.headers.as_slice(), &body);
        tr().inspected(body.len() as u64, started.elapsed());
        if let Err(b) = verdict {
            {
                // The log line names the event even without an audit log.
                let mut g = tr();
                if !g.enabled() {
                    let hs = head.headers.as_slice();
                    g.carried(engine::carried::request(policy, &exchange, hs, &body));
                }
            }
            // Monitor mode covers the content rules (403); a body the
            // gateway cannot read within its limits (413/415/400) protects
            // the gateway and stays refused.
            if b.status == 403 && monitors(policy, &exchange, Side::Source) {
                log_would_block(target, &b, &method, &p.path, &tr().log_fields());
                tr().would_block(&b.reason);
                monitored_push = true;
            } else {
                let _ = client.write_all(&blocked(&b, &p.path)).await;
                return Err(End::Close);
            }
        }
        Some(body)
    } else {
        None
    };

    // Upstream: the instance's configured address, never a DNS answer
    // (allowlisted hosts excepted).
    tr().stage(Stage::Upstream);
    let key = UpstreamKey {
        host: p.host.clone(),
        port: p.port,
        instance: match &exchange {
            Exchange::Sync { dst, .. } => Some(*dst),
            Exchange::Allowlisted { .. } => None,
        },
    };
    if upstream.as_ref().is_some_and(|u| u.key != key) {
        *upstream = None;
    }
    if upstream.is_none() {
        match connect(shared, policy, tls, target, &key).await {
            Ok(io) => {
                *upstream = Some(Upstream {
                    key: key.clone(),
                    io,
                })
            }
            Err((status, why)) => {
                shared
                    .metrics
                    .upstream_error(if status == 504 { "timeout" } else { "connect" });
                tracing::warn!(client = %target.client_ip(), "upstream {}:{} failed: {why}", key.host, key.port);
                let why = format!("upstream {}:{} failed: {why}", key.host, key.port);
                let _ = client.write_all(&failed(status, &why, &p.path)).await;
                return Err(End::Close);
            }
        }
    }
    let Some(up) = upstream.as_mut() else {
        return Err(End::Close);
    };
    up.io.set_read_timeout(t.upstream_response);

    // Forward the request with framing written here.
    let mut fwd = strip_hop_by_hop(&head.headers);
    if target.absolute_form() {
        fwd.remove("host");
        let authority = if p.port == 80 {
            p.host.clone()
        } else {
            format!("{}:{}", p.host, p.port)
        };
        fwd.0.insert(0, ("Host".into(), authority.into_bytes()));
    }
    match (&inspected_body, framing) {
        (Some(body), _) if framing != Framing::None || !body.is_empty() => {
            fwd.push("Content-Length", body.len().to_string())
        }
        (None, Framing::Length(n)) => fwd.push("Content-Length", n.to_string()),
        (None, Framing::Chunked) => fwd.push("Transfer-Encoding", "chunked"),
        _ => {}
    }
    let mut wire = Vec::new();
    write_head(&format!("{} {} HTTP/1.1", method, p.path), &fwd, &mut wire);
    let forwarded_at = Instant::now();
    let sent = async {
        match &inspected_body {
            Some(body) => write_message(&mut up.io.io, std::mem::take(&mut wire), body).await?,
            None => {
                let n = client
                    .copy_body(
                        &wire,
                        framing,
                        max_body,
                        &mut up.io.io,
                        framing == Framing::Chunked,
                    )
                    .await?;
                tr().request_bytes(n);
            }
        }
        Ok::<(), HttpError>(())
    }
    .await;
    if let Err(e @ HttpError::TooSlow(_)) = &sent {
        // The client's fault, not the server's: 408 as for a buffered body.
        let _ = client
            .write_all(&refuse(e.status(), &e.to_string(), &p.path))
            .await;
        return Err(End::Close);
    }
    if let Err(e) = sent {
        let e = match e {
            HttpError::Io(io) => io.to_string(),
            other => other.to_string(),
        };
        shared.metrics.upstream_error("send");
        tracing::warn!(client = %target.client_ip(), "forwarding request failed: {e}");
        let why = format!("forwarding request failed: {e}");
        let _ = client.write_all(&failed(502, &why, &p.path)).await;
        return Err(End::Close);
    }
    // Sent: the request body leaves memory and the budget now, not when
    // the (possibly slow) answer is done.
    drop(inspected_body);
    drop(request_hold);

    // Phase 3: response head (interim 1xx answers are dropped; we sent our
    // own 100 Continue, and upgrades are refused).
    tr().stage(Stage::ResponseHead);
    let resp = loop {
        let r = tokio::time::timeout(
            t.upstream_response,
            up.io.read_response_head(head_limits(policy)),
        )
        .await;
        match r {
            Ok(Ok(h)) if h.status == 101 => {
                let _ = client
                    .write_all(&refuse(502, "upstream switched protocols", &p.path))
                    .await;
                return Err(End::Close);
            }
            Ok(Ok(h)) if (100..200).contains(&h.status) => continue,
            Ok(Ok(h)) => {
                tr().upstream(forwarded_at.elapsed());
                break h;
            }
            Ok(Err(e)) => {
                shared.metrics.upstream_error("response");
                let status = if matches!(&e, HttpError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
                {
                    504
                } else {
                    502
                };
                tracing::warn!(client = %target.client_ip(), "upstream response: {e}");
                let why = format!("upstream response: {e}");
                let _ = client.write_all(&failed(status, &why, &p.path)).await;
                return Err(End::Close);
            }
            Err(_) => {
                shared.metrics.upstream_error("timeout");
                tracing::warn!(client = %target.client_ip(), "upstream response timed out");
                let why = "upstream response timed out";
                let _ = client.write_all(&failed(504, why, &p.path)).await;
                return Err(End::Close);
            }
        }
    };
    let resp_framing = match response_framing(&method, &resp) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(client = %target.client_ip(), "upstream response: {e}");
            let why = format!("upstream response: {e}");
            let _ = client.write_all(&failed(502, &why, &p.path)).await;
            return Err(End::Close);
        }
    };
    let upstream_closes = resp_framing == Framing::Close
        || resp.headers.has_token("connection", "close")
        || resp.version == Version::Http10;
    let keep = client_keeps_alive(&head) && !upstream_closes;

    // Phase 4: response body.
    let mut out = strip_hop_by_hop(&resp.headers);
    if resp_framing == Framing::None {
        // HEAD and 304 answers keep their length header as information.
        if let Some(cl) = resp.headers.get("content-length") {
            out.push("Content-Length", cl.to_vec());
        }
    }
    if !keep {
        out.push("Connection", "close");
    }
    let status_line = format!("HTTP/1.1 {} {}", resp.status, resp.reason);
    tr().stage(Stage::ResponseBody);
    if exchange.inspects_response_body() {
        let mut response_hold = shared.buffers.reservation();
        let mut over = None;
        let read = up.io.read_body_granted(resp_framing, max_body, |n| {
            grant(&mut response_hold, n, buffered_limit, &mut over)
        });
        let body = match read.await {
            Ok(b) => b,
            Err(HttpError::NotGranted) => {
                // The request went through; its answer cannot be held for
                // inspection now. Nothing of it reaches the client.
                if let Some(e) = over {
                    let _ = client.write_all(&over_budget(&e, &p.path)).await;
                }
                return Err(End::Close);
            }
            Err(HttpError::BodyTooLarge(n)) => {
                // Fail closed: a response over the body limit is not passed
                // on uninspected; that limit is the policy's, so a block.
                let b = Block::forbidden(format!(
                    "response body could not be inspected: body exceeds {n} bytes"
                ));
                let _ = client.write_all(&blocked(&b, &p.path)).await;
                return Err(End::Close);
            }
            Err(e) => {
                // An upstream that resets, stalls or mis-frames its body is
                // the upstream's failure (502, 504 when it stalled), not a
                // policy decision: nothing of it is passed on, and the
                // client may retry rather than record a block.
                let status = if matches!(&e, HttpError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
                {
                    504
                } else {
                    502
                };
                tracing::warn!(client = %target.client_ip(), "upstream response body: {e}");
                let why = format!("upstream response body: {e}");
                let _ = client.write_all(&failed(status, &why, &p.path)).await;
                return Err(End::Close);
            }
        };
        let r = Response {
            status: resp.status,
            headers: resp.headers.as_slice(),
            body: &body,
        };
        {
            let mut g = tr();
            g.response_bytes(body.len() as u64);
            if g.enabled() {
                g.carried(engine::carried::response(policy, &exchange, &r));
            }
        }
        let started = Instant::now();
        let verdict = engine::response(policy, &exchange, &r);
        tr().inspected(body.len() as u64, started.elapsed());
        if let Err(b) = verdict {
            {
                let mut g = tr();
                if !g.enabled() {
                    g.carried(engine::carried::response(policy, &exchange, &r));
                }
            }
            if monitored_push || monitors(policy, &exchange, Side::Destination) {
                log_would_block(target, &b, &method, &p.path, &tr().log_fields());
                tr().would_block(&b.reason);
            } else {
                // Whatever the cause, a refused response is a 403 with none
                // of the upstream's body.
                let b = Block { status: 403, ..b };
                let _ = client.write_all(&blocked(&b, &p.path)).await;
                return Err(End::Close);
            }
        }
        if resp_framing != Framing::None {
            out.push("Content-Length", body.len().to_string());
        }
        let mut wire = Vec::new();
        write_head(&status_line, &out, &mut wire);
        tr().allow(resp.status);
        if write_message(&mut client.io, wire, &body).await.is_err() {
            return Err(End::Close);
        }
    } else {
        let chunked_out = matches!(resp_framing, Framing::Chunked | Framing::Close)
            && head.version == Version::Http11;
        match resp_framing {
            Framing::Length(n) => out.push("Content-Length", n.to_string()),
            Framing::Chunked | Framing::Close if chunked_out => {
                out.push("Transfer-Encoding", "chunked")
            }
            _ => {}
        }
        let mut wire = Vec::new();
        write_head(&status_line, &out, &mut wire);
        tr().allow(resp.status);
        match up
            .io
            .copy_body(&wire, resp_framing, u64::MAX, &mut client.io, chunked_out)
            .await
        {
            Ok(n) => tr().response_bytes(n),
            Err(e) => {
                tracing::warn!(client = %target.client_ip(), "streaming response failed: {e}");
                return Err(End::Close);
            }
        }
        if resp_framing == Framing::Close && !chunked_out {
            return Ok(false);
        }
    }
    if upstream_closes {
        *upstream = None;
    }
    Ok(keep)
}

/// Grows `hold` to `bytes` for a body being buffered; on refusal keeps
/// why in `over` (for the answer) and says no.
fn grant(hold: &mut Reservation, bytes: u64, limit: u64, over: &mut Option<OverBuffered>) -> bool {
    match hold.grow_to(bytes, limit) {
        Ok(()) => true,
        Err(e) => {
            *over = Some(e);
            false
        }
    }
}

/// Writes a head and a buffered body: small bodies in the same write (one
/// segment), large ones after it without copying them into the head's
/// buffer (a 50 MB body must not be held twice).
async fn write_message(io: &mut BoxIo, mut head: Vec<u8>, body: &[u8]) -> std::io::Result<()> {
    if body.len() <= 64 * 1024 {
        head.extend_from_slice(body);
        io.write_all(&head).await?;
    } else {
        io.write_all(&head).await?;
        io.write_all(body).await?;
    }
    io.flush().await
}

/// A bounded cause for a failed TLS handshake, from its error text.
pub fn handshake_cause(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("timed out") || e.contains("timeout") {
        "timeout"
    } else if e.contains("refused") || e.contains("sni") || e.contains("certificate") {
        "refused"
    } else {
        "error"
    }
}

/// Whose rules decided a body: the source's (pushes) or the destination's
/// (responses).
enum Side {
    Source,
    Destination,
}

/// Is the instance whose rules decided this body in monitor mode?
fn monitors(policy: &Policy, exchange: &Exchange, side: Side) -> bool {
    let Exchange::Sync { src, dst, .. } = exchange else {
        return false;
    };
    let id = match side {
        Side::Source => src,
        Side::Destination => dst,
    };
    policy.gateway.mode_of(id.0 as usize) == Mode::Monitor
}

/// A monitor-mode block: the same reason, worded so that rules matching
/// `request blocked:` do not fire for what was forwarded.
fn log_would_block(target: &Target, b: &Block, method: &str, path: &str, f: &LogFields) {
    tracing::warn!(
        client = %target.client_ip(),
        src = %f.src,
        dst = %f.dst,
        event_uuid = %f.uuids,
        "request would be blocked (monitor mode, forwarded): [{}]{} - {}",
        Sanitized(method),
        Sanitized(path),
        Sanitized(&b.reason)
    );
}

/// misp-guard's exact text as the message; who and which event as fields.
fn log_block(target: &Target, b: &Block, method: &str, path: &str, f: &LogFields) {
    if let Some(detail) = &b.detail {
        tracing::warn!(client = %target.client_ip(), "{detail}");
    }
    tracing::warn!(
        client = %target.client_ip(),
        src = %f.src,
        dst = %f.dst,
        event_uuid = %f.uuids,
        "{}",
        b.log_line(method, path)
    );
}

/// Opens the upstream leg: TCP to the instance's configured address (or,
/// for allowlisted hosts, the original destination / a DNS answer), then
/// TLS when the client spoke TLS.
async fn connect(
    shared: &Shared,
    policy: &Policy,
    tls: &TlsState,
    target: &Target,
    key: &UpstreamKey,
) -> Result<HttpIo<BoxIo>, (u16, String)> {
    let t = policy.gateway.timeouts;
    let addr = match (key.instance, target.orig_dst()) {
        (Some(id), _) => {
            let inst = policy.instance(id);
            SocketAddr::new(inst.ip, inst.port)
        }
        (None, Some(dst)) => dst,
        (None, None) => {
            let lookup = tokio::time::timeout(
                t.upstream_connect,
                tokio::net::lookup_host((key.host.as_str(), key.port)),
            );
            match lookup.await {
                Ok(Ok(mut addrs)) => addrs
                    .next()
                    .ok_or((502, format!("{} has no address", key.host)))?,
                Ok(Err(e)) => return Err((502, format!("resolving {}: {e}", key.host))),
                Err(_) => return Err((504, format!("resolving {} timed out", key.host))),
            }
        }
    };
    if shared
        .listeners
        .is_self(crate::net::OrigDstAddr::new(addr), &shared.local_ips)
    {
        return Err((502, format!("{addr} is the gateway itself")));
    }
    let source = (policy.gateway.transparent_source && target.mode() == ListenMode::Tproxy)
        .then_some(target.client_ip());
    let tcp = crate::net::connect_upstream(addr, source, t.upstream_connect)
        .await
        .map_err(|e| {
            (
                if e.kind() == std::io::ErrorKind::TimedOut {
                    504
                } else {
                    502
                },
                e.to_string(),
            )
        })?;
    if !target.client_tls() {
        return Ok(HttpIo::new(Box::new(tcp)));
    }
    let name = match key.instance {
        Some(id) => policy.instance(id).host.clone(),
        None => key.host.clone(),
    };
    let config = tls
        .upstream_config(key.instance)
        .ok_or((502, "no upstream TLS configuration".to_string()))?;
    let tls = crate::tls::connect(config, &name, tcp, t.handshake)
        .await
        .map_err(|e| {
            let e = e.to_string();
            shared
                .metrics
                .handshake_failure("upstream", handshake_cause(&e));
            (502, e)
        })?;
    Ok(HttpIo::new(Box::new(tls)))
}
