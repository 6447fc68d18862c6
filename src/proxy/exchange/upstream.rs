//! The upstream leg: connecting to the real server (TCP to the instance's
//! configured address, then TLS when the client spoke TLS), reusing an
//! idle connection instead when one is interchangeable, giving it back
//! afterwards, and writing a buffered message to a peer.
//!
//! Reuse across client connections (`upstream_pool`) is for instance
//! destinations only: an allowlisted host's address may come from DNS and
//! its connection is kept by its own client connection only, as before. A
//! connection made from the client's own address (`transparent_source`
//! with TPROXY) carries that client's identity and is never shared either.
//!
//! A request that fails on a reused connection before any answer (the
//! server closed it just as the request went out) is not retried: the
//! gateway cannot know whether the server acted on it, and a push is not
//! idempotent; MISP's sync reports the failure and the next sync run sends
//! it again. Such a close is made unlikely instead: a connection is checked
//! with `still_open` right before it is used, and an idle one is kept
//! shorter (`gateway.timeouts.upstream_idle_secs`, 4 s) than the 5 s after
//! which Apache, in front of most MISPs, closes it.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::{handshake_cause, Upstream, UpstreamKey};
use crate::http::io::HttpIo;
use crate::policy::{ListenMode, Policy};
use crate::proxy::binding::Target;
use crate::proxy::state::{Shared, TlsState};
use crate::proxy::stream::BoxIo;
use crate::proxy::upstream_pool::{still_open, PoolKey};

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
    let source = transparent_source(policy, target);
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

/// The client's own address, when the upstream connection must come from
/// it (`transparent_source`, TPROXY only).
fn transparent_source(policy: &Policy, target: &Target) -> Option<IpAddr> {
    (policy.gateway.transparent_source && target.mode() == ListenMode::Tproxy)
        .then_some(target.client_ip())
}

/// Under which key a connection to `key` may be shared with other client
/// connections; None when it must not be: not an instance (allowlisted),
/// made from the client's own address, or pooling is off
/// (`upstream_idle_secs` 0).
pub fn pool_key(policy: &Policy, target: &Target, key: &UpstreamKey) -> Option<PoolKey> {
    let id = key.instance?;
    if transparent_source(policy, target).is_some()
        || policy.gateway.timeouts.upstream_idle.is_zero()
    {
        return None;
    }
    let inst = policy.instance(id);
    Some(PoolKey {
        generation: key.generation,
        instance: id,
        addr: SocketAddr::new(inst.ip, inst.port),
        // The name `connect` verifies the server's certificate for.
        tls_name: target.client_tls().then(|| inst.host.clone()),
    })
}

/// A connection to `key` that is already open: the one this client
/// connection holds (when it goes to the same place under the same
/// snapshot), else an idle one from the shared pool. Each is checked with
/// `still_open` first; a closed one is dropped. None: connect anew.
pub fn reuse(
    shared: &Shared,
    policy: &Policy,
    target: &Target,
    held: &mut Option<Upstream>,
    key: &UpstreamKey,
) -> Option<Upstream> {
    if held.as_ref().is_some_and(|u| &u.key != key) {
        release(shared, held.take());
    }
    if let Some(mut up) = held.take() {
        if !up.io.has_buffered() && still_open(&mut up.io.io) {
            shared.metrics.upstream_connection("kept");
            up.reusable = false;
            return Some(up);
        }
        shared.metrics.upstream_connection("stale");
    }
    let pool = pool_key(policy, target, key)?;
    let idle = policy.gateway.timeouts.upstream_idle;
    // Bounded: each round removes one entry from a bounded pool.
    loop {
        let (found, expired) = shared.upstream_pool.take(&pool, Instant::now(), idle);
        drop(expired);
        shared.pool_changed();
        let mut io = found?;
        if still_open(&mut io) {
            shared.metrics.upstream_connection("pooled");
            return Some(Upstream {
                key: key.clone(),
                io: HttpIo::new(io),
                pool: Some(pool),
                reusable: false,
                idle_since: Instant::now(),
            });
        }
        shared.metrics.upstream_connection("stale");
    }
}

/// A new connection's record (`connect` made it for `key`).
pub fn opened(
    shared: &Shared,
    policy: &Policy,
    target: &Target,
    key: UpstreamKey,
    io: HttpIo<BoxIo>,
) -> Upstream {
    shared.metrics.upstream_connection("opened");
    Upstream {
        pool: pool_key(policy, target, &key),
        key,
        io,
        reusable: false,
        idle_since: Instant::now(),
    }
}

/// A client connection is done with `up` (it ended, or its next request
/// goes elsewhere): into the shared pool when it may be shared and its
/// last exchange left it clean (answer read to the end, nothing unread);
/// else closed. The pool refuses it after a reload.
pub fn release(shared: &Shared, up: Option<Upstream>) {
    let Some(up) = up else { return };
    let (Some(pool), true) = (up.pool, up.reusable) else {
        return;
    };
    let (io, unread) = up.io.into_parts();
    if !unread.is_empty() {
        return;
    }
    let idle = shared.policy().gateway.timeouts.upstream_idle;
    let closed = shared
        .upstream_pool
        .put(pool, io, up.idle_since, Instant::now(), idle);
    shared.pool_changed();
    drop(closed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{ClientAddr, OrigDstAddr};
    use crate::policy::InstanceId;
    use crate::proxy::binding::{Binding, ClientTls};

    /// Two instances; `gateway` is the config's gateway section.
    fn policy(gateway: serde_json::Value) -> Policy {
        let inst = |ip: &str, host: &str, c: &str| {
            serde_json::json!({"ip": ip, "host": host, "port": 443, "compartment_id": c,
                "affiliation": "",
                "taxonomies_rules": {"required_taxonomies": [], "allowed_tags": {}, "blocked_tags": []},
                "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
                "blocked_attribute_types": [], "blocked_attribute_categories": [],
                "blocked_object_types": []})
        };
        let cfg = serde_json::json!({
            "allowlist": {"urls": [], "domains": []},
            "compartments_rules": {"can_reach": {"c1": ["c2"], "c2": ["c1"]}},
            "instances": {"a": inst("192.0.2.1", "a.test", "c1"), "b": inst("198.51.100.2", "b.test", "c2")},
            "gateway": gateway,
        });
        crate::config::from_slice(cfg.to_string().as_bytes(), std::path::Path::new("t.json"))
            .unwrap()
    }

    fn target(capture: ListenMode, tls: bool) -> Target {
        Target {
            client: ClientAddr::new("192.0.2.1:40000".parse().unwrap()),
            binding: Binding::Transparent {
                capture,
                orig_dst: OrigDstAddr::new("198.51.100.2:443".parse().unwrap()),
                tls: tls.then(|| ClientTls {
                    sni: Some("b.test".into()),
                    name: "b.test".into(),
                }),
            },
            conn: 1,
        }
    }

    fn key(instance: Option<InstanceId>) -> UpstreamKey {
        UpstreamKey {
            host: "b.test".into(),
            port: 443,
            instance,
            generation: 7,
        }
    }

    #[test]
    fn instance_connections_are_pooled_under_address_name_and_generation() {
        let p = policy(serde_json::json!({}));
        let b = p.instances.iter().position(|i| i.id == "b").unwrap();
        let id = InstanceId(b as u16);
        let got = pool_key(&p, &target(ListenMode::Redirect, true), &key(Some(id))).unwrap();
        assert_eq!(
            got,
            PoolKey {
                generation: 7,
                instance: id,
                addr: "198.51.100.2:443".parse().unwrap(),
                tls_name: Some("b.test".into()),
            }
        );
        // Plain HTTP is another key; TPROXY without transparent_source
        // connects from the gateway's address, so it is pooled too.
        let plain = pool_key(&p, &target(ListenMode::Tproxy, false), &key(Some(id))).unwrap();
        assert_eq!(plain.tls_name, None);
    }

    #[test]
    fn never_pooled_from_the_clients_address_for_allowlisted_hosts_or_when_off() {
        let p = policy(serde_json::json!({"transparent_source": true}));
        let id = Some(InstanceId(0));
        // The upstream connection carries the client's own address.
        assert_eq!(
            pool_key(&p, &target(ListenMode::Tproxy, true), &key(id)),
            None
        );
        // transparent_source only acts with TPROXY.
        assert!(pool_key(&p, &target(ListenMode::Redirect, true), &key(id)).is_some());
        // Not an instance (allowlisted host).
        let p = policy(serde_json::json!({}));
        let t = target(ListenMode::Redirect, true);
        assert_eq!(pool_key(&p, &t, &key(None)), None);
        // Pooling off.
        let p = policy(serde_json::json!({"timeouts": {"upstream_idle_secs": 0}}));
        assert_eq!(pool_key(&p, &t, &key(id)), None);
    }
}
