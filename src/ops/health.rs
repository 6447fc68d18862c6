//! The operations listener (`--metrics ADDR`, `gateway.metrics.listen`; off
//! by default): `GET /healthz` (the process answers), `GET /readyz` (200
//! only when the gateway can do its job, else 503 with the reason) and
//! `GET /metrics` (Prometheus text format). Plain HTTP/1.1, one request per
//! connection, a few connections at a time: it is for a monitoring system
//! on a management address, never a compartment-facing one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::audit::AuditLog;
use super::metrics::Metrics;
use crate::deploy::runtime::RulesKeeper;
use crate::http::io::HttpIo;

/// Concurrent connections served; more wait in the accept queue.
const CONCURRENT: usize = 8;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/readyz` looks at.
pub struct Readiness {
    /// Set once the listeners of the start are bound and accepting.
    pub listeners_bound: AtomicBool,
    /// The nftables tables the gateway keeps (`--nftables`), if any.
    pub rules: Option<Arc<RulesKeeper>>,
}

impl Readiness {
    /// Ok, or why not. (The policy is loaded: the process does not run
    /// without one, and a failed reload keeps the running one.)
    pub fn check(&self) -> Result<(), String> {
        if !self.listeners_bound.load(Ordering::Acquire) {
            return Err("listeners not bound yet".into());
        }
        if let Some(rules) = &self.rules {
            rules.verify()?;
        }
        Ok(())
    }
}

/// Everything the listener reports on.
pub struct Ops {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub audit: Option<Arc<AuditLog>>,
}

pub async fn serve(listener: TcpListener, ops: Arc<Ops>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("metrics listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let ops = ops.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut io = HttpIo::new(tcp);
            let head = match tokio::time::timeout(HEAD_TIMEOUT, io.read_request_head(8192)).await {
                Ok(Ok(Some(h))) => h,
                _ => return,
            };
            let (status, ctype, body) = answer(&ops, &head.method, &head.target).await;
            let mut out = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            if head.method != "HEAD" {
                out.extend_from_slice(body.as_bytes());
            }
            let _ = io.io.write_all(&out).await;
            let _ = io.io.shutdown().await;
        });
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn readiness(ops: &Ops) -> Result<(), String> {
    let readiness = ops.readiness.clone();
    // `nft list` runs a process: off the runtime's threads.
    tokio::task::spawn_blocking(move || readiness.check())
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
}

async fn answer(ops: &Ops, method: &str, target: &str) -> (&'static str, &'static str, String) {
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "GET only\n".into());
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" => match readiness(ops).await {
            Ok(()) => ("200 OK", TEXT, "ready\n".into()),
            Err(why) => (
                "503 Service Unavailable",
                TEXT,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            let ready = readiness(ops).await.is_ok();
            let audit = ops.audit.as_ref().map_or(0, |a| a.failures());
            let restored = ops.readiness.rules.as_ref().map_or(0, |r| r.restorations());
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ops.metrics.render(audit, restored, ready),
            )
        }
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}
