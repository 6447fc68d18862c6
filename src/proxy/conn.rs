//! From an accepted socket to a bound [`Target`]: recover where the client
//! was going, decide at connection time (before any byte is forwarded or a
//! TLS handshake is made), terminate TLS with a certificate chosen by SNI,
//! then hand over to the exchange loop.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use super::binding::{Binding, ClientTls, Target};
use super::exchange::{self, head_limits};
use super::respond;
use super::state::Shared;
use super::stream::{BoxIo, Prefixed};
use super::trail::{self, ConnRefusal};
use crate::engine::{self, Block, Destination};
use crate::http::head::RequestHead;
use crate::http::io::HttpIo;
use crate::net::{self, ClientAddr, OrigDstAddr};
use crate::policy::{ListenMode, Policy};
use crate::tls::TlsError;
use crate::vocab::split_host_port;

/// TLS records start with 0x16 (handshake); HTTP methods with a letter.
const TLS_HANDSHAKE: u8 = 0x16;

pub async fn handle(
    shared: Arc<Shared>,
    mode: ListenMode,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let client = ClientAddr::new(peer);
    shared.metrics.active_connections.inc();
    let result = match mode {
        ListenMode::Redirect | ListenMode::Tproxy => {
            transparent(&shared, mode, tcp, client, shutdown).await
        }
        ListenMode::Explicit => explicit(&shared, tcp, client, shutdown).await,
    };
    shared.metrics.active_connections.dec();
    if let Err(Refused { kind, why }) = result {
        // Rate-limited per kind: a flood must not fill the journal.
        if shared.may_log_refusal(kind) {
            tracing::warn!(client = %client.ip(), mode = mode.as_str(), "connection refused: {why}");
        }
    }
}

/// Why a connection was not served, and its kind for the log rate limit.
struct Refused {
    kind: &'static str,
    why: String,
}

fn refusal(kind: &'static str, why: impl Into<String>) -> Refused {
    Refused {
        kind,
        why: why.into(),
    }
}

fn refused(b: Block, what: &str) -> Refused {
    refusal("destination", format!("{what} - {}", b.reason))
}

/// Audits (and counts) a connection refused before any request was read.
fn audit_refusal(shared: &Shared, r: ConnRefusal<'_>) {
    let policy = shared.policy();
    trail::connection_refused(
        shared.audit.as_deref(),
        &shared.metrics,
        &policy,
        shared.next_conn_id(),
        &r,
    );
}

/// A transparent connection refused on its original destination.
fn transparent_refusal<'a>(
    mode: ListenMode,
    client: ClientAddr,
    orig: OrigDstAddr,
    asked: &'a str,
    reason: &'a str,
) -> ConnRefusal<'a> {
    ConnRefusal {
        mode,
        client: client.ip(),
        orig_dst: Some(orig.addr()),
        name: None,
        asked,
        sni: None,
        method: "",
        status: 0,
        reason,
    }
}

async fn transparent(
    shared: &Arc<Shared>,
    mode: ListenMode,
    tcp: TcpStream,
    client: ClientAddr,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Refused> {
    let orig: OrigDstAddr = match mode {
        ListenMode::Tproxy => net::original_dst_tproxy(&tcp),
        _ => net::original_dst_redirect(&tcp),
    }
    .map_err(|e| refusal("capture", e.to_string()))?;
    let asked = orig.to_string();
    if shared.listeners.is_self(orig, &shared.local_ips) {
        let reason = "original destination is the gateway itself (loop)";
        audit_refusal(
            shared,
            transparent_refusal(mode, client, orig, &asked, reason),
        );
        return Err(refusal("loop", format!("{orig} - {reason}")));
    }
    let policy = shared.policy();
    // Decided now, before a byte is read or an upstream connection made:
    // only an instance's ip:port is served in transparent mode (no relay,
    // whatever SNI or Host will say; see engine::transparent_destination).
    let default_name =
        match engine::connection(&policy, client.ip(), Some(orig.ip()), None, orig.port()) {
            // The instance's own name, for a client that sends no SNI.
            Ok(Destination::Instance(id)) => policy.instance(id).host.clone(),
            Ok(Destination::Allowlisted) => {
                let reason = "allowlist does not apply in transparent mode";
                audit_refusal(
                    shared,
                    transparent_refusal(mode, client, orig, &asked, reason),
                );
                return Err(refusal("destination", format!("{orig} - {reason}")));
            }
            Err(b) => {
                audit_refusal(
                    shared,
                    transparent_refusal(mode, client, orig, &asked, &b.reason),
                );
                return Err(refused(b, &asked));
            }
        };
    let mut first = [0u8; 1];
    let timeouts = policy.gateway.timeouts;
    match tokio::time::timeout(timeouts.handshake, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return Ok(()),
    }
    let target = Target {
        client,
        binding: Binding::Transparent {
            capture: mode,
            orig_dst: orig,
            tls: None,
        },
        conn: shared.next_conn_id(),
    };
    let io: BoxIo = Box::new(Prefixed::new(Vec::new(), tcp));
    let tls = first[0] == TLS_HANDSHAKE;
    start(shared, target, tls, io, Some(default_name), None, shutdown).await
}

async fn explicit(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    client: ClientAddr,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Refused> {
    let policy = shared.policy();
    let timeouts = policy.gateway.timeouts;
    let mut io = HttpIo::new(tcp);
    let Some(head) = first_head(&mut io, &policy).await? else {
        return Ok(());
    };
    if head.method != "CONNECT" {
        // Absolute-form plain HTTP, as MISP sends through Proxy.host.
        let target = Target {
            client,
            binding: Binding::AbsoluteForm,
            conn: shared.next_conn_id(),
        };
        let (tcp, rest) = io.into_parts();
        let io: BoxIo = Box::new(Prefixed::new(rest, tcp));
        exchange::serve(shared.clone(), target, io, Some(head), shutdown).await;
        return Ok(());
    }
    let (host, port) = admit_connect(shared, &mut io, &policy, client, &head).await?;
    io.write_all(respond::CONNECT_OK)
        .await
        .map_err(|e| refusal("connect", e.to_string()))?;
    // Bytes the client sent right behind its CONNECT are replayed.
    let (tcp, rest) = io.into_parts();
    let first = match rest.first() {
        Some(b) => *b,
        None => {
            let mut first = [0u8; 1];
            match tokio::time::timeout(timeouts.handshake, tcp.peek(&mut first)).await {
                Ok(Ok(1)) => first[0],
                _ => return Ok(()),
            }
        }
    };
    let target = Target {
        client,
        binding: Binding::Tunnel {
            host: host.clone(),
            port,
            tls: None,
        },
        conn: shared.next_conn_id(),
    };
    start(
        shared,
        target,
        first == TLS_HANDSHAKE,
        Box::new(Prefixed::new(rest, tcp)),
        None,
        Some(host),
        shutdown,
    )
    .await
}

/// The explicit listener's first request head; `None`: the client closed
/// first. A malformed head is answered with its status, a slow one 408.
async fn first_head(
    io: &mut HttpIo<TcpStream>,
    policy: &Policy,
) -> Result<Option<RequestHead>, Refused> {
    let wait = policy.gateway.timeouts.request_head;
    match tokio::time::timeout(wait, io.read_request_head(head_limits(policy))).await {
        Ok(Ok(head)) => Ok(head),
        Ok(Err(e)) => {
            // The reason in the answer too (a 431 names the limit).
            let answer = respond::refusal("", e.status(), &e.to_string(), "");
            let _ = io.write_all(&answer).await;
            Err(refusal("bad request", format!("bad request: {e}")))
        }
        Err(_) => {
            let _ = io.write_all(&respond::plain(408)).await;
            Err(refusal("head timeout", "request head timed out"))
        }
    }
}

/// A CONNECT's authority, admitted by `engine::connection` (source,
/// destination, compartment, port) before any tunnel is opened; refused:
/// audited and answered 403.
async fn admit_connect(
    shared: &Arc<Shared>,
    io: &mut HttpIo<TcpStream>,
    policy: &Policy,
    client: ClientAddr,
    head: &RequestHead,
) -> Result<(String, u16), Refused> {
    let (host, port) = split_host_port(&head.target)
        .and_then(|(h, p)| p.map(|p| (h, p)))
        .ok_or_else(|| {
            refusal(
                "connect",
                format!("invalid CONNECT authority {:?}", head.target),
            )
        })?;
    let Err(b) = engine::connection(policy, client.ip(), None, Some(&host), port) else {
        return Ok((host, port));
    };
    let line = b.log_line("CONNECT", &head.target);
    audit_refusal(
        shared,
        ConnRefusal {
            mode: ListenMode::Explicit,
            client: client.ip(),
            orig_dst: None,
            name: Some(&host),
            asked: &head.target,
            sni: None,
            method: "CONNECT",
            status: 403,
            reason: &b.reason,
        },
    );
    // MISP's fallback client ignores the status and starts TLS anyway, so
    // answer and close.
    let _ = io.write_all(&respond::plain(403)).await;
    Err(refusal("connect", line))
}

/// TLS (when the client speaks it) then the exchange loop.
async fn start(
    shared: &Arc<Shared>,
    target: Target,
    client_tls: bool,
    io: BoxIo,
    default_name: Option<String>,
    connect_host: Option<String>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Refused> {
    if !client_tls {
        exchange::serve(shared.clone(), target, io, None, shutdown).await;
        return Ok(());
    }
    let names = Names {
        connect_host,
        default_name,
    };
    let (tls, target) = accept_tls(shared, target, io, names).await?;
    let mut tls: BoxIo = Box::new(tls);
    let _ = tls.flush().await;
    exchange::serve(shared.clone(), target, tls, None, shutdown).await;
    Ok(())
}

/// The names a TLS client may use: a tunnel's CONNECT host, or the
/// transparent destination's own name for a client that sends no SNI.
#[derive(Clone)]
struct Names {
    connect_host: Option<String>,
    default_name: Option<String>,
}

impl Names {
    /// The name the client believes it talks to must be the destination
    /// already decided (POLICY.md §4 consistent destination); without SNI,
    /// the destination's own name.
    fn for_sni(&self, sni: Option<&str>) -> Result<String, TlsError> {
        match (sni, &self.connect_host, &self.default_name) {
            (Some(s), Some(c), _) if s != c => Err(TlsError::refused(
                Some(s),
                format!("SNI does not match CONNECT host {c}"),
            )),
            (Some(s), _, _) => Ok(s.to_string()),
            (None, Some(c), _) => Ok(c.clone()),
            (None, None, Some(d)) => Ok(d.clone()),
            (None, None, None) => Err(TlsError::refused(None, "no SNI and no known destination")),
        }
    }
}

/// What the certificate chooser decided, kept for after the handshake.
enum Choice {
    Pending,
    Chosen(String),
    /// The policy refused the name (SNI, reason), for the audit.
    Refused(Option<String>, String),
}

/// Accepts the client's TLS with a certificate chosen by SNI, under one
/// snapshot: the policy that decides and the TLS material built from it (a
/// reload may swap both at any time).
async fn accept_tls(
    shared: &Arc<Shared>,
    target: Target,
    io: BoxIo,
    names: Names,
) -> Result<(TlsStream<BoxIo>, Target), Refused> {
    let snap = shared.snapshot();
    let (policy, tls_state) = (snap.policy, snap.tls);
    let deadline = policy.gateway.timeouts.handshake;
    let (client_ip, orig, port) = (target.client_ip(), target.orig_dst(), target.port());
    let choice = Arc::new(std::sync::Mutex::new(Choice::Pending));
    let record = choice.clone();
    let chooser_names = names.clone();
    let choose = move |sni: Option<String>| {
        let (policy, tls_state, names) = (policy.clone(), tls_state.clone(), chooser_names);
        let record = record.clone();
        async move {
            let decided = names.for_sni(sni.as_deref()).and_then(|name| {
                engine::connection(&policy, client_ip, orig.map(|o| o.ip()), Some(&name), port)
                    .map(|d| (d, name.clone()))
                    .map_err(|b| TlsError::refused(Some(&name), b.reason))
            });
            let set = |c: Choice| *record.lock().unwrap_or_else(|e| e.into_inner()) = c;
            let (decided, name) = match decided {
                Ok(d) => d,
                Err(e) => {
                    if let TlsError::Refused { reason, .. } = &e {
                        set(Choice::Refused(sni, reason.clone()));
                    }
                    return Err(e);
                }
            };
            set(Choice::Chosen(name.clone()));
            let inst = match decided {
                Destination::Instance(id) => Some(id),
                Destination::Allowlisted => None,
            };
            tls_state.server_config(inst, &name).await
        }
    };
    let peer = client_ip.to_string();
    let accepted = crate::tls::accept_with_sni_io(io, &peer, choose, deadline).await;
    let choice = std::mem::replace(
        &mut *choice.lock().unwrap_or_else(|e| e.into_inner()),
        Choice::Pending,
    );
    match (accepted, choice) {
        (Ok((tls, sni)), Choice::Chosen(name)) => {
            Ok((tls, target.with_tls(ClientTls { sni, name })))
        }
        // The handshake completed, so the chooser ran and named it.
        (Ok(_), _) => Err(refusal("tls", "TLS accepted without a chosen name")),
        (Err(e), choice) => {
            let e = e.to_string();
            shared
                .metrics
                .handshake_failure("client", exchange::handshake_cause(&e));
            if let Choice::Refused(sni, reason) = choice {
                audit_tls_refusal(shared, &target, &names, sni.as_deref(), &reason);
            }
            Err(refusal("tls", e))
        }
    }
}

/// Audits a TLS client the policy refused by its SNI.
fn audit_tls_refusal(
    shared: &Shared,
    target: &Target,
    names: &Names,
    sni: Option<&str>,
    reason: &str,
) {
    let port = target.port();
    // As the client named it: original destination, or the CONNECT
    // authority.
    let asked = match (target.orig_dst(), &names.connect_host) {
        (Some(o), _) => o.to_string(),
        (None, Some(h)) if h.contains(':') => format!("[{h}]:{port}"),
        (None, Some(h)) => format!("{h}:{port}"),
        (None, None) => String::new(),
    };
    audit_refusal(
        shared,
        ConnRefusal {
            mode: target.mode(),
            client: target.client_ip(),
            orig_dst: target.orig_dst(),
            // The destination already decided, not the one the refused
            // SNI names.
            name: names.connect_host.as_deref().or(sni),
            asked: &asked,
            sni,
            method: "",
            status: 0,
            reason,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_name_is_the_destination_already_decided() {
        let tunnel = Names {
            connect_host: Some("b.example".into()),
            default_name: None,
        };
        assert_eq!(tunnel.for_sni(Some("b.example")).unwrap(), "b.example");
        assert_eq!(tunnel.for_sni(None).unwrap(), "b.example");
        let other = tunnel.for_sni(Some("a.example")).unwrap_err().to_string();
        assert!(
            other.contains("SNI does not match CONNECT host b.example"),
            "{other}"
        );
        let transparent = Names {
            connect_host: None,
            default_name: Some("b.example".into()),
        };
        // The SNI is decided by the engine afterwards (it may name the
        // instance by another accepted form, e.g. its IP).
        assert_eq!(transparent.for_sni(Some("10.2.0.1")).unwrap(), "10.2.0.1");
        assert_eq!(transparent.for_sni(None).unwrap(), "b.example");
        let none = Names {
            connect_host: None,
            default_name: None,
        };
        assert!(none.for_sni(None).is_err());
    }
}
