//! One client connection after capture and TLS: read each request, decide
//! it with the engine, forward it, decide the response, answer — in order,
//! one exchange at a time (pipelined requests wait in the read buffer).
//!
//! An exchange is a sequence of phases (`phases`), pingora-style, each with
//! one obvious place for the filter:
//! 1. admit the request head → `engine::request_head` (nothing sent yet)
//! 2. request body → buffered and `engine::request_body` when the policy
//!    reads it, else left to stream; a blocked push never reaches the
//!    server, not even its head
//! 3. forward → the upstream leg, the request with framing written here
//! 4. response head → read from upstream
//! 5. response body → buffered and `engine::response` when the policy
//!    reads it (a block answers 403 with none of the upstream body), else
//!    streamed
//! 6. log → the audit record, written when the exchange's `Trail` drops
//!
//! Any phase may stop the exchange with the gateway's own answer; `exchange`
//! is the one place that writes it and closes. Bodies are forwarded as the
//! original bytes (Content-Encoding intact) with framing the gateway writes
//! itself (`hop`).

mod arrival;
mod hop;
mod phases;
mod response;
mod target;
mod upstream;

use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::binding::Target;
use super::respond;
use super::state::{Shared, TlsState};
use super::stream::BoxIo;
use super::trail::Trail;
use super::upstream_pool::PoolKey;
use crate::http::head::{HeadLimits, RequestHead};
use crate::http::io::HttpIo;
use crate::http::rate::MinRate;
use crate::policy::{InstanceId, Policy};
use phases::{Phases, Stop};

/// How large a request or response head may be under `policy`.
pub fn head_limits(policy: &Policy) -> HeadLimits {
    // Both limits are bounded at load (config::compile_limits).
    HeadLimits {
        max_bytes: policy.limits.max_header_bytes as usize,
        max_fields: policy.limits.max_header_count as usize,
    }
}

/// Where a request goes upstream, under which snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UpstreamKey {
    pub host: String,
    pub port: u16,
    pub instance: Option<InstanceId>,
    /// `TlsState::generation` of the exchange's snapshot: a connection
    /// made before a reload is not reused after it (instance ids, addresses
    /// and upstream verification may all have changed).
    pub generation: u64,
}

/// The upstream connection a client connection holds between exchanges.
struct Upstream {
    pub key: UpstreamKey,
    pub io: HttpIo<BoxIo>,
    /// Where it may wait for another client connection once this one is
    /// done with it; None: never shared (`upstream::pool_key`).
    pub pool: Option<PoolKey>,
    /// True once an exchange on it completed with framing that leaves it
    /// usable (`Relayed::upstream_closes` false); false from the moment a
    /// request is sent on it. Only a reusable connection is kept.
    pub reusable: bool,
    /// When its last exchange completed (pool expiry counts from here).
    pub idle_since: Instant,
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
    first: Option<RequestHead>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client = HttpIo::new(client);
    let mut upstream: Option<Upstream> = None;
    let close = serve_requests(
        &shared,
        &target,
        &mut client,
        &mut upstream,
        first,
        &mut shutdown,
    )
    .await;
    // Given back before the lingering close: another client connection
    // may use it while this one drains.
    upstream::release(&shared, upstream.take());
    if close {
        let _ = client.io.shutdown().await;
        linger(&mut client.io).await;
    }
}

/// The connection's exchanges, one after the other. True: the last one
/// asked for the connection to be closed (shut down, then linger).
async fn serve_requests(
    shared: &Shared,
    target: &Target,
    client: &mut HttpIo<BoxIo>,
    upstream: &mut Option<Upstream>,
    mut first: Option<RequestHead>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
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
                        Ok(Ok(None)) => return false,
                        Ok(Err(e)) => {
                            tracing::warn!(client = %target.client_ip(), "bad request: {e}");
                            let answer = respond::refusal("", e.status(), &e.to_string(), "");
                            let _ = client.write_all(&answer).await;
                            return false;
                        }
                        Err(_) => {
                            if served == 0 || client.has_buffered() {
                                let answer = respond::refusal("", 408, "request head timed out", "");
                                let _ = client.write_all(&answer).await;
                            }
                            return false;
                        }
                    },
                    _ = shutdown.changed() => return false,
                }
            }
        };
        served += 1;
        match exchange(shared, policy, &snap.tls, target, client, upstream, head).await {
            Ok(true) => continue,
            Ok(false) | Err(End::Close) => return true,
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

/// One request/response exchange through its phases. Ok(true): keep the
/// connection.
async fn exchange(
    shared: &Shared,
    policy: &Arc<Policy>,
    tls: &TlsState,
    target: &Target,
    client: &mut HttpIo<BoxIo>,
    upstream: &mut Option<Upstream>,
    head: RequestHead,
) -> Result<bool, End> {
    let method = head.method.clone();
    let mut x = Phases {
        shared,
        policy,
        tls,
        target,
        // The audit line of this exchange, written when it ends (however).
        trail: Trail::new(
            shared.audit.as_deref(),
            &shared.metrics,
            policy,
            target,
            &method,
            &head.target,
        ),
        method,
    };
    let outcome = async {
        let mut admitted = x.admit(client, &head).await?;
        let body = x.request_body(client, &head, &mut admitted).await?;
        let path = admitted.parsed.path.clone();
        let exchange = admitted.exchange.clone();
        let monitored_push = body.monitored;
        let forwarded_at = x.forward(client, upstream, &head, admitted, body).await?;
        let up = upstream.as_mut().ok_or(Stop::Close)?;
        let (resp, framing) = x.response_head(up, &path, forwarded_at).await?;
        x.response_body(
            client,
            up,
            &head,
            &exchange,
            &path,
            resp,
            framing,
            monitored_push,
        )
        .await
    }
    .await;
    // The one exit of a stopped exchange: its answer (already logged and
    // audited by the phase that stopped it), then close.
    match outcome {
        Ok(relayed) => {
            if relayed.upstream_closes {
                *upstream = None;
            } else if let Some(up) = upstream.as_mut() {
                // Answer read to its end: ready for the next request.
                up.reusable = true;
                up.idle_since = Instant::now();
            }
            Ok(relayed.keep)
        }
        Err(Stop::Close) => Err(End::Close),
        Err(Stop::Answer(answer)) => {
            let _ = client.write_all(&answer).await;
            Err(End::Close)
        }
        Err(Stop::AnswerDraining(answer, framing, len)) => {
            let _ = client.write_all(&answer).await;
            let mut sink = tokio::io::sink();
            let drain = client.copy_body(b"", framing, len, &mut sink, false);
            let _ = tokio::time::timeout(policy.gateway.timeouts.body, drain).await;
            Err(End::Close)
        }
    }
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
