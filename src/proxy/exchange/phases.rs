//! One exchange as a sequence of phases, each returning a typed result or
//! a [`Stop`]: the gateway's own answer, already logged and audited, that
//! the one exit in `exchange` writes before closing. The order is the
//! invariant: nothing of a request is sent upstream before its head (and,
//! when the policy reads it, its body) is allowed; nothing of an inspected
//! answer reaches the client before it is allowed. The request's phases
//! are here, the answer's in `response`.

use std::sync::Arc;
use std::time::Instant;

use super::arrival::Arrival;
use super::hop;
use super::target::{parse_target, Parsed};
use super::upstream::{connect, opened, reuse, write_message};
use super::{Upstream, UpstreamKey};
use crate::engine::{self, Block, Exchange, RequestHead as EngineHead, Sanitized};
use crate::http::head::{write_head, RequestHead};
use crate::http::io::{HttpError, HttpIo};
use crate::http::{request_framing, Framing};
use crate::ops::audit::Stage;
use crate::policy::{Mode, Policy};
use crate::proxy::binding::Target;
use crate::proxy::buffer_budget::{OverBuffered, Reservation};
use crate::proxy::respond;
use crate::proxy::state::{Shared, TlsState};
use crate::proxy::stream::BoxIo;
use crate::proxy::trail::{LogFields, Trail};

/// How an exchange ends before an answer is relayed.
pub enum Stop {
    /// The gateway answers this itself (logged and audited), then closes.
    Answer(Vec<u8>),
    /// Answer, then drain the request body the client was about to send
    /// (`Framing`, at most that many bytes), so it reads the answer rather
    /// than a reset.
    AnswerDraining(Vec<u8>, Framing, u64),
    /// Nothing more can be said (client gone, answer already under way).
    Close,
}

/// The exchange's context: the snapshot that decides it, the connection,
/// and its audit record (written when it is dropped).
pub struct Phases<'a> {
    pub shared: &'a Shared,
    /// The snapshot's policy (an `Arc`: a push's parsing thread keeps it).
    pub policy: &'a Arc<Policy>,
    pub tls: &'a TlsState,
    pub target: &'a Target,
    pub method: String,
    pub trail: Trail<'a>,
}

/// The request head, admitted.
pub struct Admitted {
    pub parsed: Parsed,
    pub exchange: Exchange,
    pub framing: Framing,
    /// The request body's share of the buffer budget.
    pub hold: Reservation,
}

/// The request body as decided: buffered (inspected) or left to stream.
pub struct RequestBody {
    pub inspected: Option<Vec<u8>>,
    /// A push let through in monitor mode: its answer (the event as the
    /// server stored it) is monitored too, or the push would still fail.
    pub monitored: bool,
}

/// The answer relayed: whether the client connection stays open, and
/// whether the upstream one can serve the next request.
pub struct Relayed {
    pub keep: bool,
    pub upstream_closes: bool,
}

/// Whose rules decided a body: the source's (pushes) or the destination's
/// (responses).
pub(super) enum Side {
    Source,
    Destination,
}

impl<'a> Phases<'a> {
    // ---------------------------------------------------------- refusals

    /// A refusal the gateway decides (framing, limits): logged as a block.
    pub(super) fn refuse(&mut self, status: u16, reason: &str, path: &str) -> Stop {
        let b = Block::with_status(status, reason);
        tracing::warn!(client = %self.target.client_ip(), "{}", b.log_line(&self.method, path));
        self.trail.block(status, reason);
        Stop::Answer(respond::refusal(&self.method, status, reason, path))
    }

    /// A policy block: misp-guard's line with the instances and uuids.
    pub(super) fn blocked(&mut self, b: &Block, path: &str) -> Stop {
        log_block(self.target, b, &self.method, path, &self.trail.log_fields());
        self.trail.block(b.status, &b.reason);
        Stop::Answer(respond::refusal(&self.method, b.status, &b.reason, path))
    }

    /// A push blocked before all of it arrived: answered at once, then
    /// what the client still sends is drained (a known length, bounded by
    /// the body timeout) so it reads the answer rather than a reset; a
    /// chunked body is cut short by the close's lingering drain.
    fn blocked_early(
        &mut self,
        b: &Block,
        path: &str,
        framing: Framing,
        received: u64,
        exact: bool,
    ) -> Stop {
        match (self.blocked(b, path), framing) {
            (Stop::Answer(answer), Framing::Length(n)) => {
                let rest = n.saturating_sub(received);
                // Counted exactly: exactly the rest; else until the client
                // closes, at most the rest and one read more.
                let drain = if exact {
                    Framing::Length(rest)
                } else {
                    Framing::Close
                };
                Stop::AnswerDraining(answer, drain, rest + 64 * 1024)
            }
            (stop, _) => stop,
        }
    }

    /// Not a decision (upstream unreachable, timed out, broken): the
    /// failure is logged where it happens; the answer names it.
    pub(super) fn failed(&mut self, status: u16, why: &str, path: &str) -> Stop {
        self.trail.failed(status, why);
        Stop::Answer(respond::refusal(&self.method, status, why, path))
    }

    /// A body the memory budget cannot hold: 503 + Retry-After, audited as
    /// a block (nothing was forwarded), logged rate-limited (a burst of
    /// large syncs must not flood the journal).
    pub(super) fn over_budget(&mut self, e: &OverBuffered, path: &str) -> Stop {
        let reason = e.to_string();
        if self.shared.may_log_refusal("budget") {
            let b = Block::with_status(503, reason.clone());
            tracing::warn!(client = %self.target.client_ip(), "{}", b.log_line(&self.method, path));
        }
        self.trail.block(503, &reason);
        Stop::Answer(respond::busy(&self.method, &reason, path))
    }

    /// An upstream failure while reading its answer: 504 when it stalled,
    /// else 502; counted and logged.
    pub(super) fn upstream_failed(&mut self, what: &str, e: &HttpError, path: &str) -> Stop {
        let stalled = matches!(e, HttpError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut);
        tracing::warn!(client = %self.target.client_ip(), "{what}: {e}");
        self.failed(
            if stalled { 504 } else { 502 },
            &format!("{what}: {e}"),
            path,
        )
    }

    /// Is the instance whose rules decided this body in monitor mode?
    pub(super) fn monitors(&self, exchange: &Exchange, side: Side) -> bool {
        let Exchange::Sync { src, dst, .. } = exchange else {
            return false;
        };
        let id = match side {
            Side::Source => src,
            Side::Destination => dst,
        };
        self.policy.gateway.mode_of(id.0 as usize) == Mode::Monitor
    }

    /// Monitor mode: logged and audited as would_block; the message goes on.
    pub(super) fn would_block(&mut self, b: &Block, path: &str) {
        log_would_block(self.target, b, &self.method, path, &self.trail.log_fields());
        self.trail.would_block(&b.reason);
    }

    // ---------------------------------------------------- 1. request head

    /// The head: target and protocol, the engine's decision, framing, the
    /// declared size and the buffer budget; answers `100 Continue` itself.
    /// Nothing has been sent upstream.
    pub async fn admit(
        &mut self,
        client: &mut HttpIo<BoxIo>,
        head: &RequestHead,
    ) -> Result<Admitted, Stop> {
        // HTTP-level refusals win over a target that cannot be
        // interpreted, so a nested `CONNECT host:port` is refused as such
        // (as `evaluate` refuses it); `engine::request_head` applies them
        // again for the decision itself.
        let protocol = engine::protocol::check(&self.method, head.headers.as_slice());
        let parsed = match (parse_target(self.target, head), protocol) {
            (Ok(p), Ok(())) => p,
            (Ok(p), Err(b)) => return Err(self.blocked(&b, &p.path)),
            (Err(_), Err(b)) => return Err(self.blocked(&b, &head.target)),
            (Err((status, why)), Ok(())) => return Err(self.refuse(status, &why, &head.target)),
        };
        self.trail.path(&parsed.path);
        let engine_head = EngineHead {
            client_ip: self.target.client_ip(),
            host: &parsed.host,
            port: parsed.port,
            scheme: parsed.scheme.clone(),
            dst_ip: self.target.orig_dst().map(|d| d.ip()),
            method: &self.method,
            path: &parsed.path,
            headers: head.headers.as_slice(),
        };
        let exchange = match engine::request_head(self.policy, &engine_head) {
            Ok(x) => x,
            Err(b) => return Err(self.blocked(&b, &parsed.path)),
        };
        self.trail.exchange(self.policy, &exchange);
        if let Some(note) = exchange.note() {
            tracing::info!(client = %self.target.client_ip(), "{note}");
        }
        let framing = request_framing(head)
            .map_err(|e| self.refuse(e.status(), &e.to_string(), &parsed.path))?;
        if let Framing::Length(n) = framing {
            // Refuse a declared oversize body before asking for it.
            if let Err(b) = engine::request_body_size(self.policy, n) {
                return Err(self.blocked(&b, &parsed.path));
            }
        }
        // Upgrades, nested CONNECT, the method's spelling and `Expect` were
        // refused by the engine; an allowed head may only expect
        // `100-continue`.
        let expects_continue = head.headers.contains("expect");
        // A declared length is reserved before anything is asked of the
        // client (no 100 Continue for a body that cannot be held).
        let mut hold = self.shared.buffers.reservation();
        if let (true, Framing::Length(n)) = (exchange.inspects_request_body(), framing) {
            if let Err(e) = hold.grow_to(n, self.policy.limits.max_buffered_bytes) {
                return Err(match self.over_budget(&e, &parsed.path) {
                    Stop::Answer(a) if !expects_continue => Stop::AnswerDraining(a, framing, n),
                    other => other,
                });
            }
        }
        if expects_continue && framing != Framing::None {
            // Answered here: the server never sees the expectation.
            client
                .write_all(respond::CONTINUE)
                .await
                .map_err(|_| Stop::Close)?;
        }
        Ok(Admitted {
            parsed,
            exchange,
            framing,
            hold,
        })
    }

    // ---------------------------------------------------- 2. request body

    /// Buffers and decides the body when the policy reads it (monitor mode
    /// lets a content refusal through); else leaves it to stream.
    pub async fn request_body(
        &mut self,
        client: &mut HttpIo<BoxIo>,
        head: &RequestHead,
        adm: &mut Admitted,
    ) -> Result<RequestBody, Stop> {
        self.trail.stage(Stage::RequestBody);
        let path = adm.parsed.path.clone();
        if !adm.exchange.inspects_request_body() {
            return Ok(RequestBody {
                inspected: None,
                monitored: false,
            });
        }
        let (limit, max_body) = (
            self.policy.limits.max_buffered_bytes,
            self.policy.limits.max_body_bytes,
        );
        // A pushed event is read as it arrives (`arrival`): its verdict is
        // ready when its last byte is, and a push blocked early is answered
        // without reading the rest.
        let source_monitored = self.monitors(&adm.exchange, Side::Source);
        let mut arrival =
            Arrival::request(self.policy, &adm.exchange, &head.headers, source_monitored);
        let mut over = None;
        let hold = &mut adm.hold;
        let read = arrival.receive(client, adm.framing, max_body, |n| {
            grant(hold, n, limit, &mut over)
        });
        let body = match read.await {
            Ok(b) => b,
            Err(HttpError::NotGranted) => {
                return Err(match over {
                    Some(e) => self.over_budget(&e, &path),
                    None => Stop::Close,
                })
            }
            Err(HttpError::Stopped { received }) => {
                let (b, named) = arrival.stopped().ok_or(Stop::Close)?;
                self.trail.request_bytes(received);
                self.trail.carried(named);
                let exact = arrival.count_exact();
                return Err(self.blocked_early(&b, &path, adm.framing, received, exact));
            }
            Err(e) => return Err(self.refuse(e.status(), &e.to_string(), &path)),
        };
        let hs = head.headers.as_slice();
        self.trail.request_bytes(body.len() as u64);
        if self.trail.enabled() {
            let carried = engine::carried::request(self.policy, &adm.exchange, hs, &body);
            self.trail.carried(carried);
        }
        // Inspection time: what is left of it once the last byte is in.
        let finished = Instant::now();
        let verdict = arrival.verdict(&body);
        self.trail.inspected(body.len() as u64, finished.elapsed());
        let mut monitored = false;
        if let Err(b) = verdict {
            // The log line names the event even without an audit log.
            if !self.trail.enabled() {
                let carried = engine::carried::request(self.policy, &adm.exchange, hs, &body);
                self.trail.carried(carried);
            }
            // Monitor mode covers the content rules (403); a body the
            // gateway cannot read within its limits (413/415/400) protects
            // the gateway and stays refused.
            if b.status == 403 && source_monitored {
                self.would_block(&b, &path);
                monitored = true;
            } else {
                return Err(self.blocked(&b, &path));
            }
        }
        Ok(RequestBody {
            inspected: Some(body),
            monitored,
        })
    }

    // --------------------------------------------------------- 3. forward

    /// Opens (or keeps) the upstream leg — the instance's configured
    /// address, never a DNS answer (allowlisted hosts excepted) — and sends
    /// the request with framing written here. The request body leaves
    /// memory and the budget as soon as it is sent.
    pub async fn forward(
        &mut self,
        client: &mut HttpIo<BoxIo>,
        upstream: &mut Option<Upstream>,
        head: &RequestHead,
        adm: Admitted,
        body: RequestBody,
    ) -> Result<Instant, Stop> {
        self.trail.stage(Stage::Upstream);
        let path = adm.parsed.path.clone();
        let key = UpstreamKey {
            host: adm.parsed.host.clone(),
            port: adm.parsed.port,
            instance: match &adm.exchange {
                Exchange::Sync { dst, .. } => Some(*dst),
                Exchange::Allowlisted { .. } => None,
            },
            generation: self.tls.generation,
        };
        let up = self.upstream_leg(upstream, key, &path).await?;
        up.io
            .set_read_timeout(self.policy.gateway.timeouts.upstream_response);

        let absolute = self
            .target
            .absolute_form()
            .then_some((adm.parsed.host.as_str(), adm.parsed.port));
        let inspected_len = body.inspected.as_ref().map(Vec::len);
        let fwd = hop::request_headers(&head.headers, absolute, inspected_len, adm.framing);
        let mut wire = Vec::new();
        write_head(
            &format!("{} {} HTTP/1.1", self.method, path),
            &fwd,
            &mut wire,
        );
        let forwarded_at = Instant::now();
        let sent = match &body.inspected {
            Some(b) => write_message(&mut up.io.io, wire, b)
                .await
                .map_err(HttpError::Io),
            None => {
                let max_body = self.policy.limits.max_body_bytes;
                let chunked = adm.framing == Framing::Chunked;
                client
                    .copy_body(&wire, adm.framing, max_body, &mut up.io.io, chunked)
                    .await
                    .map(|n| self.trail.request_bytes(n))
            }
        };
        match sent {
            Ok(()) => {}
            // The client's fault, not the server's: 408 as for a buffered
            // body.
            Err(e @ HttpError::TooSlow(_)) => {
                return Err(self.refuse(e.status(), &e.to_string(), &path))
            }
            Err(e) => {
                let e = match e {
                    HttpError::Io(io) => io.to_string(),
                    other => other.to_string(),
                };
                self.shared.metrics.upstream_error("send");
                tracing::warn!(client = %self.target.client_ip(), "forwarding request failed: {e}");
                let why = format!("forwarding request failed: {e}");
                return Err(self.failed(502, &why, &path));
            }
        }
        // Sent: body and reservation are dropped here, not when the
        // (possibly slow) answer is done.
        drop((body, adm.hold));
        Ok(forwarded_at)
    }

    /// The connection to `key`: one already open (held by this client
    /// connection, or idle in the shared pool — `upstream::reuse`), else a
    /// new one.
    async fn upstream_leg<'u>(
        &mut self,
        upstream: &'u mut Option<Upstream>,
        key: UpstreamKey,
        path: &str,
    ) -> Result<&'u mut Upstream, Stop> {
        if let Some(up) = reuse(self.shared, self.policy, self.target, upstream, &key) {
            return Ok(upstream.insert(up));
        }
        match connect(self.shared, self.policy, self.tls, self.target, &key).await {
            Ok(io) => Ok(upstream.insert(opened(self.shared, self.policy, self.target, key, io))),
            Err((status, why)) => {
                let kind = if status == 504 { "timeout" } else { "connect" };
                self.shared.metrics.upstream_error(kind);
                let why = format!("upstream {}:{} failed: {why}", key.host, key.port);
                tracing::warn!(client = %self.target.client_ip(), "{why}");
                Err(self.failed(status, &why, path))
            }
        }
    }
}

/// Grows `hold` to `bytes` for a body being buffered; on refusal keeps
/// why in `over` (for the answer) and says no.
pub(super) fn grant(
    hold: &mut Reservation,
    bytes: u64,
    limit: u64,
    over: &mut Option<OverBuffered>,
) -> bool {
    match hold.grow_to(bytes, limit) {
        Ok(()) => true,
        Err(e) => {
            *over = Some(e);
            false
        }
    }
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
