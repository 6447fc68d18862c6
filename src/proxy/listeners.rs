//! The running listeners and their accept loops, changed as a whole on
//! reload: [`ListenerSet::stage`] binds every new listener first (a failure
//! leaves the running set untouched and drops what it bound), then
//! [`ListenerSet::commit`] — which cannot fail — stops accepting on removed
//! listeners and starts accepting on the new ones. Connections accepted by a
//! removed listener go on until they end (or until shutdown's grace period).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

use super::admission::ConnectionBudget;
use super::conn;
use super::state::Shared;
use crate::net::{self, LocalListeners};
use crate::policy::{ListenMode, Listener};

/// Listen backlog of every listener.
const BACKLOG: u32 = 1024;

/// Counts live connections so shutdown can wait for them.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves once no connection is left.
    pub async fn drained(&self) {
        while self.count() > 0 {
            let notified = self.idle.notified();
            if self.count() == 0 {
                break;
            }
            notified.await;
        }
    }
}

/// One live connection; dropping it updates the count.
struct Guard(Arc<InFlight>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What every accept loop needs.
#[derive(Clone)]
pub struct AcceptContext {
    pub shared: Arc<Shared>,
    pub inflight: Arc<InFlight>,
    /// Connections open in total and per client (`admission`).
    pub budget: Arc<ConnectionBudget>,
    /// Flips to true on SIGTERM: accept loops end, exchanges wind down.
    pub shutdown: watch::Receiver<bool>,
}

/// A listener bound but not yet accepting.
pub struct Bound {
    pub listener: Listener,
    pub local: SocketAddr,
    socket: TcpListener,
}

/// Binds one configured listener.
pub fn bind(l: &Listener) -> Result<Bound, String> {
    let socket = net::bind_listener(l.addr, l.mode, BACKLOG).map_err(|e| e.to_string())?;
    let local = socket
        .local_addr()
        .map_err(|e| format!("{}: {e}", l.addr))?;
    Ok(Bound {
        listener: *l,
        local,
        socket,
    })
}

struct Running {
    listener: Listener,
    local: SocketAddr,
    retire: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The listeners of a reload, bound and checked, not yet accepting.
pub struct Staged {
    /// Indexes into the running set of listeners that stay.
    keep: Vec<usize>,
    new: Vec<Bound>,
}

impl Staged {
    pub fn new_listeners(&self) -> impl Iterator<Item = &Bound> {
        self.new.iter()
    }
}

/// The listeners the gateway runs, identified by mode and configured address.
#[derive(Default)]
pub struct ListenerSet {
    running: Vec<Running>,
}

impl ListenerSet {
    /// The configured listeners, in order.
    pub fn listeners(&self) -> Vec<Listener> {
        self.running.iter().map(|r| r.listener).collect()
    }

    /// Binds every listener of `wanted` that does not run yet. Nothing
    /// running is touched; on error the sockets bound so far are closed.
    pub fn stage(&self, wanted: &[Listener]) -> Result<Staged, String> {
        let mut keep = Vec::new();
        let mut new = Vec::new();
        for l in wanted {
            match self.running.iter().position(|r| r.listener == *l) {
                Some(i) if !keep.contains(&i) => keep.push(i),
                _ => new.push(bind(l)?),
            }
        }
        Ok(Staged { keep, new })
    }

    /// The addresses the gateway listens on once `staged` is committed (the
    /// loop guard's view).
    pub fn local_after(&self, staged: &Staged) -> LocalListeners {
        LocalListeners::new(
            staged
                .keep
                .iter()
                .map(|&i| self.running[i].local)
                .chain(staged.new.iter().map(|b| b.local)),
        )
    }

    /// Stops accepting on every listener not kept by `staged` (their sockets
    /// are closed when this returns; accepted connections continue), runs
    /// `between` (the policy swap), then starts accepting on the new ones.
    pub async fn commit(&mut self, staged: Staged, ctx: &AcceptContext, between: impl FnOnce()) {
        let running = std::mem::take(&mut self.running);
        let mut kept = Vec::new();
        for (i, r) in running.into_iter().enumerate() {
            if staged.keep.contains(&i) {
                kept.push(r);
                continue;
            }
            let _ = r.retire.send(());
            let _ = r.task.await;
            tracing::info!(
                "stopped listening on {} ({}); connections it accepted continue",
                r.local,
                r.listener.mode.as_str(),
            );
        }
        between();
        self.running = kept;
        for b in staged.new {
            self.start(b, ctx);
        }
    }

    /// Starts accepting on a bound listener.
    pub fn start(&mut self, b: Bound, ctx: &AcceptContext) {
        tracing::info!("listening on {} ({})", b.local, b.listener.mode.as_str());
        let (retire, retired) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            b.listener.mode,
            b.local,
            b.socket,
            ctx.clone(),
            retired,
        ));
        self.running.push(Running {
            listener: b.listener,
            local: b.local,
            retire,
            task,
        });
    }

    /// Waits for every accept loop to end (after shutdown was signalled).
    pub async fn join(self) {
        for r in self.running {
            let _ = r.task.await;
        }
    }
}

async fn accept_loop(
    mode: ListenMode,
    addr: SocketAddr,
    socket: TcpListener,
    ctx: AcceptContext,
    mut retired: oneshot::Receiver<()>,
) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            r = socket.accept() => match r {
                Ok((tcp, peer)) => {
                    let limits = ctx.shared.snapshot().policy.limits;
                    let admitted = match ctx.budget.admit(peer.ip(), &limits) {
                        Ok(a) => a,
                        Err(why) => {
                            // A flood is exactly when this fires most.
                            if ctx.shared.may_log_refusal("connections") {
                                tracing::warn!(client = %peer.ip(), "connection refused: {why}");
                            }
                            drop(tcp);
                            continue;
                        }
                    };
                    ctx.inflight.count.fetch_add(1, Ordering::AcqRel);
                    let guard = Guard(ctx.inflight.clone());
                    let shared = ctx.shared.clone();
                    let stop = ctx.shutdown.clone();
                    tokio::spawn(async move {
                        conn::handle(shared, mode, tcp, peer, stop).await;
                        drop(admitted);
                        drop(guard);
                    });
                }
                // Out of descriptors and similar: log, breathe, go on.
                Err(e) => {
                    tracing::warn!("accept on {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
            _ = &mut retired => return,
        }
    }
}
