//! The data path: listeners, capture, TLS both ways, and the exchange loop
//! that puts the engine inline.

pub mod conn;
pub mod exchange;
pub mod notify;
pub mod respond;
pub mod state;
pub mod stream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

use crate::config;
use crate::net::{self, ListenerKind, LocalListeners};
use crate::policy::{ListenMode, Listener, Policy};
pub use state::{Shared, TlsOverrides, TlsState};

/// Command-line settings that override the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// When non-empty, replaces the config's `gateway.listeners`.
    pub listeners: Vec<Listener>,
    pub tls: TlsOverrides,
    /// `--nftables MODE`: the gateway keeps its nftables tables loaded.
    pub rules: Option<Arc<crate::deploy::runtime::RulesKeeper>>,
}

/// Counts live connections so shutdown can wait for them.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

struct Guard(Arc<InFlight>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Runs the gateway until SIGTERM/SIGINT: binds every listener, serves,
/// reloads the policy on SIGHUP (a broken file keeps the old policy), and
/// on shutdown stops accepting and lets in-flight exchanges finish within
/// the grace period.
pub async fn run(config_path: &Path, policy: Policy, opts: RunOptions) -> Result<(), String> {
    let listeners = if opts.listeners.is_empty() {
        policy.gateway.listeners.clone()
    } else {
        opts.listeners.clone()
    };
    if listeners.is_empty() {
        return Err(
            "no listeners: add gateway.listeners to the config or --explicit/--redirect/--tproxy"
                .into(),
        );
    }
    let tls = TlsState::build(&policy, &opts.tls).map_err(|e| e.to_string())?;
    let mut bound = Vec::new();
    for l in &listeners {
        let kind = match l.mode {
            ListenMode::Redirect => ListenerKind::Redirect,
            ListenMode::Tproxy => ListenerKind::Tproxy,
            ListenMode::Explicit => ListenerKind::Explicit,
        };
        let socket = net::bind_listener(l.addr, kind, 1024).map_err(|e| e.to_string())?;
        let addr = socket.local_addr().map_err(|e| e.to_string())?;
        tracing::info!("listening on {addr} ({})", l.mode.as_str());
        bound.push((l.mode, addr, socket));
    }
    if let Some(rules) = &opts.rules {
        rules.apply(&policy)?;
    }
    let local = LocalListeners::new(bound.iter().map(|(_, a, _)| *a));
    let local_ips = net::local_ip_addresses().unwrap_or_default();
    let grace = policy.gateway.timeouts.shutdown_grace;
    let shared = Arc::new(Shared::new(
        Arc::new(policy),
        Arc::new(tls),
        local,
        local_ips,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let inflight = Arc::new(InFlight::default());

    let mut accept_tasks = Vec::new();
    for (mode, addr, socket) in bound {
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        let inflight = inflight.clone();
        accept_tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = socket.accept() => match r {
                        Ok((tcp, peer)) => {
                            inflight.count.fetch_add(1, Ordering::AcqRel);
                            let guard = Guard(inflight.clone());
                            let shared = shared.clone();
                            let stop = stop.clone();
                            tokio::spawn(async move {
                                conn::handle(shared, mode, tcp, peer, stop).await;
                                drop(guard);
                            });
                        }
                        // Out of descriptors and similar: log, breathe, go on.
                        Err(e) => {
                            tracing::warn!("accept on {addr}: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    },
                    _ = stop.changed() => return,
                }
            }
        }));
    }
    if let Some(rules) = opts.rules.clone() {
        tokio::spawn(crate::deploy::runtime::watch(rules, stop_rx.clone()));
    }
    let notifier = Arc::new(notify::Notifier::from_env());
    let status = status_line(&shared.policy(), &listeners);
    tracing::info!(
        "misp-guard-gw {} ready: {status}",
        env!("CARGO_PKG_VERSION")
    );
    notifier.send(&format!("READY=1\nSTATUS={status}"));
    if let Some(every) = notifier.watchdog_interval() {
        let n = notifier.clone();
        // Pings come from the runtime itself: a wedged runtime stops them
        // and systemd restarts the service.
        tokio::spawn(async move {
            loop {
                n.send("WATCHDOG=1");
                tokio::time::sleep(every).await;
            }
        });
    }

    signals(config_path, &shared, &opts, &notifier, &listeners).await;
    notifier.send("STOPPING=1\nSTATUS=shutting down");

    tracing::info!(
        "shutting down: no new connections, {} in flight",
        inflight.count.load(Ordering::Acquire)
    );
    let _ = stop_tx.send(true);
    for t in accept_tasks {
        let _ = t.await;
    }
    let drained = async {
        while inflight.count.load(Ordering::Acquire) > 0 {
            let notified = inflight.idle.notified();
            if inflight.count.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            "grace period over, {} connection(s) cut",
            inflight.count.load(Ordering::Acquire)
        );
    }
    Ok(())
}

/// One line for logs and `systemctl status`.
fn status_line(policy: &Policy, listeners: &[Listener]) -> String {
    let l: Vec<String> = listeners
        .iter()
        .map(|l| format!("{} {}", l.mode.as_str(), l.addr))
        .collect();
    format!(
        "{} instances in {} compartments; listening: {}",
        policy.instances.len(),
        policy.compartments.len(),
        l.join(", ")
    )
}

/// Waits for SIGTERM/SIGINT; handles SIGHUP (reload) meanwhile.
async fn signals(
    config_path: &Path,
    shared: &Shared,
    opts: &RunOptions,
    notifier: &notify::Notifier,
    listeners: &[Listener],
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                notifier.send("RELOADING=1");
                let status = match reload(config_path, shared, opts) {
                    Ok(()) => format!("reloaded; {}", status_line(&shared.policy(), listeners)),
                    Err(e) => format!("reload failed, old policy kept: {e}"),
                };
                notifier.send(&format!("READY=1\nSTATUS={status}"));
            }
        }
    }
}

/// Loads the config again; on any error the running policy stays.
pub fn reload(config_path: &Path, shared: &Shared, opts: &RunOptions) -> Result<(), String> {
    let loaded = config::load(config_path)
        .map_err(|e| e.to_string())
        .and_then(|p| {
            let tls = TlsState::build(&p, &opts.tls).map_err(|e| e.to_string())?;
            // Last fallible step: the new tables are loaded only when
            // everything else of the new policy is good.
            if let Some(rules) = &opts.rules {
                rules.apply(&p)?;
            }
            Ok((p, tls))
        });
    match loaded {
        Ok((p, tls)) => {
            shared.replace(Arc::new(p), Arc::new(tls));
            tracing::info!("policy reloaded from {}", config_path.display());
            Ok(())
        }
        Err(e) => {
            tracing::error!("reload failed, keeping the running policy: {e}");
            Err(e)
        }
    }
}

/// `--explicit ADDR` etc. on the command line.
pub fn listener_flag(mode: ListenMode, addr: &str) -> Result<Listener, String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not ip:port"))?;
    Ok(Listener { mode, addr })
}

/// Writes a new gateway CA (`ca.crt`, `ca.key` mode 0600) into `dir`.
pub fn write_ca(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca = crate::tls::CertificateAuthority::generate("misp-guard-gw CA")
        .map_err(|e| e.to_string())?;
    ca.write_new_ca(dir).map_err(|e| e.to_string())
}
