//! The data path: listeners, capture, TLS both ways, and the exchange loop
//! that puts the engine inline.

pub mod admission;
pub mod binding;
pub mod buffer_budget;
pub mod config_watch;
pub mod conn;
pub mod exchange;
pub mod listeners;
pub mod log_limit;
pub mod notify;
pub mod respond;
pub mod state;
pub mod stream;
pub mod trail;
pub mod upstream_pool;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::config;
use crate::net;
use crate::ops::audit::AuditLog;
use crate::ops::health::{Ops, Readiness};
use crate::policy::{ListenMode, Listener, Mode, Policy};
use listeners::{AcceptContext, InFlight, ListenerSet};
pub use state::{Shared, TlsOverrides, TlsState};
use std::sync::atomic::{AtomicBool, Ordering};

/// Command-line settings that override the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// When non-empty, replaces the config's `gateway.listeners`.
    pub listeners: Vec<Listener>,
    pub tls: TlsOverrides,
    /// `--nftables MODE`: the gateway keeps its nftables tables loaded.
    pub rules: Option<Arc<crate::deploy::runtime::RulesKeeper>>,
    /// `--audit-log FILE`: replaces `gateway.audit_log`.
    pub audit_log: Option<PathBuf>,
    /// `--metrics ADDR`: replaces `gateway.metrics.listen`.
    pub metrics: Option<SocketAddr>,
    /// `--watch-config` (Some(true)) / `--no-watch-config` (Some(false));
    /// None: `gateway.watch_config` decides.
    pub watch_config: Option<bool>,
    /// `--log-allowed`: replaces `gateway.log_allowed` (also after reloads).
    pub log_allowed: Option<crate::policy::LogLevel>,
    /// The content the starting policy was read from (the reload watcher
    /// acts on any other); None: read the file again.
    pub config_read: Option<config_watch::Fingerprint>,
}

impl RunOptions {
    /// Command-line settings that live in the policy (so they hold after
    /// every reload too).
    fn apply_to(&self, policy: &mut Policy) {
        if let Some(level) = self.log_allowed {
            policy.gateway.log_allowed = level;
        }
    }
}

/// The listeners to run for `policy`: the command line's when given (they
/// then stay across reloads), else the config's.
fn wanted_listeners(policy: &Policy, opts: &RunOptions) -> Result<Vec<Listener>, String> {
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
    Ok(listeners)
}

/// Runs the gateway until SIGTERM/SIGINT: binds every listener, serves,
/// reloads on SIGHUP (all or nothing, see [`reload`]), and on shutdown stops
/// accepting and lets in-flight exchanges finish within the grace period.
pub async fn run(config_path: &Path, mut policy: Policy, opts: RunOptions) -> Result<(), String> {
    opts.apply_to(&mut policy);
    // The content the policy was read from: changes from now on reload.
    let seen = config_watch::Seen::default();
    if let Some(f) = opts
        .config_read
        .or_else(|| config_watch::fingerprint(config_path))
    {
        seen.set(f);
    }
    let watch_config = opts.watch_config.unwrap_or(policy.gateway.watch_config);
    let grace = policy.gateway.timeouts.shutdown_grace;

    // Every step that can fail the start, before anything is served.
    let wanted = wanted_listeners(&policy, &opts)?;
    let tls = TlsState::build(&policy, &opts.tls).map_err(|e| e.to_string())?;
    let mut set = ListenerSet::default();
    let staged = set.stage(&wanted)?;
    let local = set.local_after(&staged);
    // The tables are loaded once everything else of the start has worked:
    // a refusal by nftables fails the start.
    if let Some(rules) = &opts.rules {
        rules.apply(&policy)?;
    }
    let local_ips = net::local_ip_addresses().unwrap_or_default();
    let audit = open_audit(&policy, &opts)?;
    let metrics = bind_metrics(&policy, &opts).await?;

    // Serving.
    let shared =
        Arc::new(Shared::new(Arc::new(policy), Arc::new(tls), local, local_ips).with_audit(audit));
    let readiness = Arc::new(Readiness {
        listeners_bound: AtomicBool::new(false),
        rules: opts.rules.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = AcceptContext {
        shared: shared.clone(),
        inflight: Arc::new(InFlight::default()),
        budget: Arc::new(admission::ConnectionBudget::default()),
        shutdown: stop_rx,
    };
    set.commit(staged, &ctx, || {}).await;
    readiness.listeners_bound.store(true, Ordering::Release);
    spawn_housekeeping(&ctx, metrics, &readiness, &opts);
    let notifier = Arc::new(notify::Notifier::from_env());
    announce_ready(&shared, &set, &notifier);

    // Until a stop signal: reloads on SIGHUP and on config changes.
    let changed = watch_config_file(config_path, watch_config, &seen, &ctx);
    let reloader = Reloader {
        config_path,
        opts: &opts,
        seen,
    };
    signals(&reloader, &notifier, &mut set, &ctx, changed).await;
    notifier.send("STOPPING=1\nSTATUS=shutting down");
    shut_down(stop_tx, set, &ctx, grace).await;
    Ok(())
}

/// The audit file, chosen at start (flag, else config) and kept across
/// reloads; SIGHUP reopens it (logrotate).
fn open_audit(policy: &Policy, opts: &RunOptions) -> Result<Option<Arc<AuditLog>>, String> {
    let Some(path) = opts
        .audit_log
        .as_ref()
        .or(policy.gateway.audit_log.as_ref())
    else {
        return Ok(None);
    };
    let log = AuditLog::open(path)?;
    tracing::info!("audit log: {}", path.display());
    Ok(Some(Arc::new(log)))
}

/// The health and metrics listener, bound at start so a taken address
/// fails the start like a listener does.
async fn bind_metrics(
    policy: &Policy,
    opts: &RunOptions,
) -> Result<Option<(tokio::net::TcpListener, SocketAddr)>, String> {
    let Some(addr) = opts.metrics.or(policy.gateway.metrics_listen) else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics listener {addr}: {e}"))?;
    Ok(Some((listener, addr)))
}

/// The tasks beside the listeners: health and metrics, the keeper of the
/// nftables tables, and the sweep of idle upstream connections.
fn spawn_housekeeping(
    ctx: &AcceptContext,
    metrics: Option<(tokio::net::TcpListener, SocketAddr)>,
    readiness: &Arc<Readiness>,
    opts: &RunOptions,
) {
    let shared = &ctx.shared;
    if let Some((listener, addr)) = metrics {
        let ops = Arc::new(Ops {
            metrics: shared.metrics.clone(),
            readiness: readiness.clone(),
            audit: shared.audit.clone(),
        });
        tracing::info!("health and metrics on http://{addr} (/healthz /readyz /metrics)");
        tokio::spawn(crate::ops::health::serve(
            listener,
            ops,
            ctx.shutdown.clone(),
        ));
    }
    if let Some(rules) = opts.rules.clone() {
        tokio::spawn(crate::deploy::runtime::watch(rules, ctx.shutdown.clone()));
    }
    // Idle upstream connections past their time are closed even when no
    // request comes to take or give one back.
    let sweeping = shared.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every.tick().await;
            sweeping.sweep_upstream_pool();
        }
    });
}

/// Logs the ready line and tells systemd; starts the watchdog pings.
fn announce_ready(shared: &Shared, set: &ListenerSet, notifier: &Arc<notify::Notifier>) {
    let status = status_line(&shared.policy(), &set.listeners());
    tracing::info!(
        "misp-guard-gw {} ready: {status}",
        env!("CARGO_PKG_VERSION")
    );
    log_modes(&shared.policy());
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
}

/// The config-file watcher when `watch` is on: its changes arrive on the
/// returned channel (closed at once when off).
fn watch_config_file(
    config_path: &Path,
    watch: bool,
    seen: &config_watch::Seen,
    ctx: &AcceptContext,
) -> tokio::sync::mpsc::Receiver<()> {
    let (changed_tx, changed_rx) = tokio::sync::mpsc::channel(1);
    if watch {
        tracing::info!(
            "watching {} for changes (reload on change; SIGHUP reloads too)",
            config_path.display()
        );
        tokio::spawn(config_watch::config_file(
            config_path.to_path_buf(),
            seen.clone(),
            changed_tx,
            ctx.shutdown.clone(),
        ));
    } else {
        tracing::info!("config file changes are not watched: reload with SIGHUP");
    }
    changed_rx
}

/// Stops accepting, then waits for the exchanges in flight up to `grace`.
async fn shut_down(
    stop: watch::Sender<bool>,
    set: ListenerSet,
    ctx: &AcceptContext,
    grace: std::time::Duration,
) {
    tracing::info!(
        "shutting down: no new connections, {} in flight",
        ctx.inflight.count()
    );
    let _ = stop.send(true);
    set.join().await;
    if tokio::time::timeout(grace, ctx.inflight.drained())
        .await
        .is_err()
    {
        tracing::warn!(
            "grace period over, {} connection(s) cut",
            ctx.inflight.count()
        );
    }
}

/// One line for logs and `systemctl status`.
fn status_line(policy: &Policy, listeners: &[Listener]) -> String {
    let l: Vec<String> = listeners
        .iter()
        .map(|l| format!("{} {}", l.mode.as_str(), l.addr))
        .collect();
    let monitored = monitored_instances(policy);
    let monitor = if monitored.is_empty() {
        String::new()
    } else {
        format!(
            "; MONITOR MODE (not enforced) for: {}",
            monitored.join(", ")
        )
    };
    format!(
        "{} instances in {} compartments; listening: {}{monitor}",
        policy.instances.len(),
        policy.compartments.len(),
        l.join(", ")
    )
}

fn monitored_instances(policy: &Policy) -> Vec<&str> {
    policy
        .instances
        .iter()
        .enumerate()
        .filter(|(i, _)| policy.gateway.mode_of(*i) == Mode::Monitor)
        .map(|(_, inst)| inst.id.as_str())
        .collect()
}

/// Every instance's mode, at start and after each reload: a monitored
/// instance is not protected, which nobody should miss in the log.
fn log_modes(policy: &Policy) {
    for (i, inst) in policy.instances.iter().enumerate() {
        match policy.gateway.mode_of(i) {
            Mode::Enforce => tracing::info!("instance {}: mode enforce", inst.id),
            Mode::Monitor => tracing::warn!(
                "instance {}: MODE MONITOR - its content blocks are NOT enforced: logged and audited as would_block, forwarded unchanged",
                inst.id
            ),
        }
    }
}

/// Waits for SIGTERM/SIGINT; handles SIGHUP (reload) meanwhile.
async fn signals(
    reloader: &Reloader<'_>,
    notifier: &notify::Notifier,
    set: &mut ListenerSet,
    ctx: &AcceptContext,
    mut file_changed: tokio::sync::mpsc::Receiver<()>,
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
            // A closed channel (not watching) only disables its branch.
            Some(()) = file_changed.recv() => {
                notifier.send("RELOADING=1");
                let status = match reloader.reload(set, ctx).await {
                    Ok(()) => format!(
                        "reloaded (config file changed); {}",
                        status_line(&ctx.shared.policy(), &set.listeners())
                    ),
                    Err(e) => format!("reload failed, old policy kept: {e}"),
                };
                notifier.send(&format!("READY=1\nSTATUS={status}"));
            }
            _ = hup.recv() => {
                notifier.send("RELOADING=1");
                if let Some(audit) = &ctx.shared.audit {
                    audit.reopen();
                }
                let status = match reloader.reload(set, ctx).await {
                    Ok(()) => format!(
                        "reloaded; {}",
                        status_line(&ctx.shared.policy(), &set.listeners())
                    ),
                    Err(e) => format!("reload failed, old policy kept: {e}"),
                };
                notifier.send(&format!("READY=1\nSTATUS={status}"));
            }
        }
    }
}

/// Applies the config file again, everything or nothing: the new policy,
/// its TLS material and every new listener are prepared first; if any of it
/// fails, the running policy and listeners stay exactly as they were and
/// the error is logged with its reason. Only then is the change committed
/// (a step that cannot fail): removed listeners stop accepting (their
/// connections continue), the policy is swapped, new listeners start.
struct Reloader<'a> {
    config_path: &'a Path,
    opts: &'a RunOptions,
    /// What the last start or reload read (shared with the file watcher).
    seen: config_watch::Seen,
}

impl Reloader<'_> {
    async fn reload(&self, set: &mut ListenerSet, ctx: &AcceptContext) -> Result<(), String> {
        reload(self.config_path, self.opts, &self.seen, set, ctx).await
    }
}

async fn reload(
    config_path: &Path,
    opts: &RunOptions,
    seen: &config_watch::Seen,
    set: &mut ListenerSet,
    ctx: &AcceptContext,
) -> Result<(), String> {
    let result = async {
        // 1. Prepare; nothing running is touched. The file is read once:
        //    what is parsed is what the watcher is told was seen.
        let bytes =
            std::fs::read(config_path).map_err(|e| format!("{}: {e}", config_path.display()))?;
        seen.set(config_watch::fingerprint_of(&bytes));
        let mut policy = config::from_slice(&bytes, config_path).map_err(|e| e.to_string())?;
        opts.apply_to(&mut policy);
        let tls = TlsState::build(&policy, &opts.tls).map_err(|e| e.to_string())?;
        let wanted = wanted_listeners(&policy, opts)?;
        // Binds the new listeners; dropping `staged` closes them again.
        let staged = set.stage(&wanted)?;

        // 2. The nftables tables rendered from the new policy: the last
        //    fallible step. On failure nothing has been committed, `staged`
        //    is dropped and the running state (rules included: nft loads a
        //    file atomically) stays whole.
        if let Some(rules) = &opts.rules {
            rules.apply(&policy)?;
        }

        // 3. Commit point: nothing below can fail.
        let local = set.local_after(&staged);
        let shared = &ctx.shared;
        set.commit(staged, ctx, || {
            shared.replace(Arc::new(policy), Arc::new(tls));
            shared.set_listeners(local);
        })
        .await;
        Ok(())
    }
    .await;
    ctx.shared.metrics.reload(result.is_ok());
    match &result {
        Ok(()) => {
            tracing::info!("policy reloaded from {}", config_path.display());
            log_modes(&ctx.shared.policy());
        }
        Err(e) => tracing::error!("reload failed, keeping the running policy and listeners: {e}"),
    }
    result
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
