//! What every connection task shares: the policy (swappable on reload), the
//! TLS material built from it, and the gateway's own addresses (loop guard).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use rustls::{ClientConfig, ServerConfig};

use super::buffer_budget::BufferBudget;
use super::log_limit::{LogLimiter, LogPermit, REFUSAL_LINES_PER_SECOND};
use super::stream::BoxIo;
use super::upstream_pool::UpstreamPool;
use crate::net::{LocalListeners, OrigDstAddr};
use crate::ops::audit::AuditLog;
use crate::ops::metrics::Metrics;
use crate::policy::{InstanceId, Policy};
use crate::tls::{
    self, CertSource, CertificateAuthority, CertificateSource, LeafCache, TlsError,
    UpstreamTlsOptions,
};

/// TLS material derived from the policy's `gateway` section.
pub struct TlsState {
    /// Leaves minted from the gateway CA, for any name without its own cert.
    pub minted: Option<CertSource>,
    /// Per-instance certificates (indexed like `Policy::instances`).
    pub per_instance: Vec<Option<CertSource>>,
    /// Client configs towards each instance (pins, CAs, insecure); None for
    /// an instance no trust could be built for (only ever a source).
    pub upstream: Vec<Option<Arc<ClientConfig>>>,
    /// Client config towards allowlisted hosts (only when there are any).
    pub upstream_default: Option<Arc<ClientConfig>>,
    /// Unique per build (process-wide counter). Every start and reload
    /// builds its own `TlsState`, swapped in with its policy, so this names
    /// the snapshot: an upstream connection made under another generation
    /// (other verification, addresses or instance ids) is never reused.
    pub generation: u64,
}

/// Numbers each built `TlsState` (see `TlsState::generation`).
static TLS_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Overrides given on the command line (they win over the config file).
#[derive(Debug, Clone, Default)]
pub struct TlsOverrides {
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub upstream_ca: Option<PathBuf>,
    pub insecure_upstream: bool,
}

impl TlsState {
    pub fn build(policy: &Policy, o: &TlsOverrides) -> Result<TlsState, TlsError> {
        let s = &policy.gateway.tls;
        let ca_cert = o.ca_cert.clone().or_else(|| s.ca_cert.clone());
        let ca_key = o.ca_key.clone().or_else(|| s.ca_key.clone());
        let minted = match (ca_cert, ca_key) {
            (Some(c), Some(k)) => {
                tls::ca::warn_if_key_file_unsafe(&k);
                let ca = Arc::new(CertificateAuthority::from_pem_files(&c, &k)?);
                let cache = LeafCache::new(ca, LeafCache::DEFAULT_CAPACITY)
                    .with_host_ips(policy.instances.iter().map(|i| (i.host.as_str(), i.ip)));
                Some(CertSource::Minted(Arc::new(cache)))
            }
            _ => None,
        };
        let mut per_instance = Vec::new();
        let mut upstream = Vec::new();
        let global_ca = o.upstream_ca.clone().or_else(|| s.upstream_ca.clone());
        for (i, inst) in policy.gateway.instances.iter().enumerate() {
            per_instance.push(match (&inst.cert, &inst.key) {
                (Some(c), Some(k)) => Some(CertSource::from_pem_files(c, k)?),
                _ => None,
            });
            let insecure = o.insecure_upstream || s.insecure_upstream || inst.insecure_upstream;
            if insecure {
                tracing::warn!(
                    "upstream TLS verification is OFF for instance {}",
                    policy.instances.get(i).map_or("?", |x| x.id.as_str())
                );
            }
            let built = tls::build_client_config(&UpstreamTlsOptions {
                extra_ca_pem: inst.upstream_ca.clone().or_else(|| global_ca.clone()),
                pin_sha256: inst.upstream_pin_sha256,
                insecure,
                use_system_roots: s.use_system_roots,
            });
            upstream.push(match built {
                Ok(c) => Some(c),
                // No trust anchors at all: fine for an instance that is only
                // ever a source; connections to it answer 502. A broken
                // file, on the other hand, stops the start.
                Err(TlsError::NoTrustAnchors { .. }) => {
                    tracing::warn!(
                        "no upstream trust for instance {}: connections to it will fail",
                        policy.instances.get(i).map_or("?", |x| x.id.as_str())
                    );
                    None
                }
                Err(e) => return Err(e),
            });
        }
        let upstream_default = if policy.allowlist_is_empty() {
            None
        } else {
            Some(tls::build_client_config(&UpstreamTlsOptions {
                extra_ca_pem: global_ca,
                pin_sha256: None,
                insecure: o.insecure_upstream || s.insecure_upstream,
                use_system_roots: s.use_system_roots,
            })?)
        };
        Ok(TlsState {
            minted,
            per_instance,
            upstream,
            upstream_default,
            generation: TLS_GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The certificate to present for `name` (SNI or destination host).
    pub async fn server_config(
        &self,
        instance: Option<InstanceId>,
        name: &str,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        // `get`: a reload may swap the TLS state between a connection's
        // policy lookup and this call; a stale id must not panic.
        if let Some(Some(source)) = instance.and_then(|i| self.per_instance.get(i.0 as usize)) {
            return source.server_config(Some(name)).await;
        }
        match &self.minted {
            Some(source) => source.server_config(Some(name)).await,
            None => Err(TlsError::refused(
                Some(name),
                "no certificate: configure gateway.tls.ca_cert/ca_key or a per-instance cert",
            )),
        }
    }

    pub fn upstream_config(&self, instance: Option<InstanceId>) -> Option<Arc<ClientConfig>> {
        match instance {
            Some(i) => self.upstream.get(i.0 as usize).cloned().flatten(),
            None => self.upstream_default.clone(),
        }
    }
}

/// A policy and the TLS material built from it, swapped together.
#[derive(Clone)]
pub struct Snapshot {
    pub policy: Arc<Policy>,
    pub tls: Arc<TlsState>,
}

/// The gateway's own listener addresses for the loop guard; replaced when
/// a reload changes the listeners.
pub struct ListenerAddrs(RwLock<LocalListeners>);

impl ListenerAddrs {
    /// See [`LocalListeners::is_self`].
    pub fn is_self(&self, dst: OrigDstAddr, local_ips: &[IpAddr]) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_self(dst, local_ips)
    }
}

/// The state every connection task reads.
pub struct Shared {
    /// Read by every exchange, written by reloads only: an atomic pointer
    /// swap, so readers never wait on a lock (and a reload never waits for
    /// readers).
    current: ArcSwap<Snapshot>,
    pub listeners: ListenerAddrs,
    pub local_ips: Vec<IpAddr>,
    /// The audit trail, when `--audit-log`/`gateway.audit_log` is set.
    pub audit: Option<Arc<AuditLog>>,
    /// Numbers connections for the audit trail (`conn`).
    next_conn: AtomicU64,
    /// Counters and histograms for `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Body bytes buffered for inspection, all exchanges together
    /// (`gateway.limits.max_buffered_bytes`).
    pub buffers: Arc<BufferBudget>,
    /// Refusal log lines per reason and second (see `log_refusal`).
    refusal_log: Mutex<LogLimiter>,
    /// Idle upstream connections any client connection may take over
    /// (emptied when a reload commits a new snapshot).
    pub upstream_pool: UpstreamPool<BoxIo>,
}

impl Shared {
    pub fn new(
        policy: Arc<Policy>,
        tls: Arc<TlsState>,
        listeners: LocalListeners,
        local_ips: Vec<IpAddr>,
    ) -> Self {
        let generation = tls.generation;
        Shared {
            upstream_pool: UpstreamPool::new(generation),
            current: ArcSwap::from_pointee(Snapshot { policy, tls }),
            listeners: ListenerAddrs(RwLock::new(listeners)),
            local_ips,
            audit: None,
            next_conn: AtomicU64::new(1),
            metrics: Arc::new(Metrics::new()),
            buffers: Arc::new(BufferBudget::default()),
            refusal_log: Mutex::new(LogLimiter::new(REFUSAL_LINES_PER_SECOND)),
        }
    }

    /// May a refusal of `kind` (a fixed word per cause: `budget`,
    /// `connections`, `loop`, ...) be logged now? At most
    /// `REFUSAL_LINES_PER_SECOND` a second per kind; the first line of a
    /// later second is preceded here by how many were left out. The caller
    /// writes its own line (with its fields) when this says yes.
    pub fn may_log_refusal(&self, kind: &'static str) -> bool {
        let permit = self
            .refusal_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .permit(kind, Instant::now());
        match permit {
            LogPermit::Write {
                suppressed,
                window_age,
            } => {
                if suppressed > 0 {
                    tracing::warn!("{}", LogLimiter::summary(kind, suppressed, window_age));
                }
                true
            }
            LogPermit::Skip => false,
        }
    }

    /// Sends every decided exchange to `audit`.
    pub fn with_audit(mut self, audit: Option<Arc<AuditLog>>) -> Self {
        self.audit = audit;
        self
    }

    /// A new connection id (unique for the life of the process).
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The current policy; a connection keeps the one it started with for
    /// each exchange, so a reload never changes a decision half-way.
    pub fn policy(&self) -> Arc<Policy> {
        self.snapshot().policy
    }

    /// Policy and TLS material that belong together (instance ids of one
    /// index the other).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::clone(&self.current.load())
    }

    /// Swaps in a new policy and its TLS material (SIGHUP), in one step,
    /// and closes the idle upstream connections of the old snapshot (the
    /// ones client connections still hold are closed when given back).
    /// Cannot fail: it is part of the reload's commit.
    pub fn replace(&self, policy: Arc<Policy>, tls: Arc<TlsState>) {
        let generation = tls.generation;
        self.current.store(Arc::new(Snapshot { policy, tls }));
        let closed = self.upstream_pool.clear(generation);
        self.pool_changed();
        drop(closed);
    }

    /// Reports the pool's idle connections after it changed.
    pub fn pool_changed(&self) {
        self.metrics.upstream_pool_idle(self.upstream_pool.idle());
    }

    /// Closes the upstream connections idle for longer than the current
    /// `upstream_idle_secs` (called every second by `run`).
    pub fn sweep_upstream_pool(&self) {
        let idle = self.policy().gateway.timeouts.upstream_idle;
        let closed = self.upstream_pool.expire(Instant::now(), idle);
        if !closed.is_empty() {
            self.pool_changed();
        }
        drop(closed);
    }

    /// Records the listener addresses after a reload changed them.
    pub fn set_listeners(&self, listeners: LocalListeners) {
        *self.listeners.0.write().unwrap_or_else(|e| e.into_inner()) = listeners;
    }
}
