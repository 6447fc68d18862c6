//! The upstream leg: connecting to the real server (TCP to the instance's
//! configured address, then TLS when the client spoke TLS) and writing a
//! buffered message to a peer.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;

use super::{handshake_cause, UpstreamKey};
use crate::http::io::HttpIo;
use crate::policy::{ListenMode, Policy};
use crate::proxy::binding::Target;
use crate::proxy::state::{Shared, TlsState};
use crate::proxy::stream::BoxIo;

/// Writes a head and a buffered body: small bodies in the same write (one
/// segment), large ones after it without copying them into the head's
/// buffer (a 50 MB body must not be held twice).
pub async fn write_message(io: &mut BoxIo, mut head: Vec<u8>, body: &[u8]) -> std::io::Result<()> {
    if body.len() <= 64 * 1024 {
        head.extend_from_slice(body);
        io.write_all(&head).await?;
    } else {
        io.write_all(&head).await?;
        io.write_all(body).await?;
    }
    io.flush().await
}

/// Opens the upstream leg: TCP to the instance's configured address (or,
/// for allowlisted hosts, the original destination / a DNS answer), then
/// TLS when the client spoke TLS.
pub async fn connect(
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
