//! The audit record of one exchange, filled in as the exchange goes and
//! handed to the audit log when it is dropped — so every way out of
//! `exchange` (answer, refusal, upstream failure, client gone) leaves
//! exactly one line, and none when no audit log is configured.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::binding::Target;
use crate::engine::carried::Carried;
use crate::engine::{Exchange, Sanitized};
use crate::ops::audit::{self, AuditLog, Decision, Record, Stage};
use crate::ops::metrics::{ExchangeSample, Metrics};
use crate::policy::{InstanceId, ListenMode, LogLevel, Policy};

pub struct Trail<'a> {
    sink: Option<&'a AuditLog>,
    metrics: &'a Metrics,
    start: Instant,
    rec: Record,
    endpoint: String,
    inspected_bytes: u64,
    inspection: Duration,
    upstream: Option<Duration>,
    /// `gateway.log_allowed`: the level of this exchange's line if allowed.
    allowed_level: LogLevel,
}

/// Fields a block log line carries besides misp-guard's text.
pub struct LogFields {
    pub src: String,
    pub dst: String,
    /// The uuids the body carried, comma-separated (at most 10, then `…`).
    pub uuids: String,
}

impl<'a> Trail<'a> {
    pub fn log_fields(&self) -> LogFields {
        let id = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut uuids = self
            .rec
            .uuids
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        if self.rec.uuids.len() > 10 || self.rec.uuids_truncated {
            uuids.push_str(",…");
        }
        LogFields {
            src: id(&self.rec.src_instance),
            dst: id(&self.rec.dst_instance),
            uuids: if uuids.is_empty() { "-".into() } else { uuids },
        }
    }

    pub fn new(
        sink: Option<&'a AuditLog>,
        metrics: &'a Metrics,
        policy: &Policy,
        target: &Target,
        method: &str,
        path: &str,
    ) -> Trail<'a> {
        let mut t = Trail {
            sink,
            metrics,
            endpoint: "none".into(),
            inspected_bytes: 0,
            inspection: Duration::ZERO,
            upstream: None,
            allowed_level: policy.gateway.log_allowed,
            start: Instant::now(),
            rec: Record {
                ts: String::new(),
                conn: target.conn,
                listener: target.mode().as_str(),
                client: target.client_ip().to_string(),
                src_instance: None,
                src_compartment: None,
                dst_instance: None,
                dst_compartment: None,
                sni: target.sni().map(str::to_string),
                method: method.to_string(),
                path: audit::audited_path(path),
                stage: Stage::RequestHead,
                // Until a verdict or an answer says otherwise: an exchange
                // cut short before any decision (client gone) is audited
                // as not forwarded.
                decision: Decision::Block,
                reason: None,
                status: 0,
                request_bytes: 0,
                response_bytes: 0,
                uuids: Vec::new(),
                uuids_truncated: false,
                duration_ms: 0.0,
            },
        };
        // Before the engine has named them (a refused head), the
        // instances are those the addresses belong to.
        let src = policy.instance_by_ip(target.client_ip());
        let dst = target
            .orig_dst()
            .and_then(|d| policy.instance_by_ip(d.ip()));
        t.instances(policy, src, dst);
        t
    }

    /// Is anything recorded? (Work only the audit needs is skipped if not.)
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    pub fn path(&mut self, path: &str) {
        if self.enabled() {
            self.rec.path = audit::audited_path(path);
        }
    }

    /// The instances the engine decided the exchange is between.
    pub fn exchange(&mut self, policy: &Policy, x: &Exchange) {
        match x {
            Exchange::Sync { src, dst, endpoint } => {
                self.instances(policy, Some(*src), Some(*dst));
                self.endpoint = format!("{endpoint:?}");
            }
            Exchange::Allowlisted { .. } => self.endpoint = "allowlisted".into(),
        }
    }

    /// A body the engine read and how long deciding it took.
    pub fn inspected(&mut self, bytes: u64, took: Duration) {
        self.inspected_bytes += bytes;
        self.inspection += took;
    }

    /// From forwarding the request to the response head.
    pub fn upstream(&mut self, took: Duration) {
        self.upstream = Some(took);
    }

    fn instances(&mut self, policy: &Policy, src: Option<InstanceId>, dst: Option<InstanceId>) {
        if let Some((id, comp)) = src.map(|i| named(policy, i)) {
            self.rec.src_instance = Some(id);
            self.rec.src_compartment = comp;
        }
        if let Some((id, comp)) = dst.map(|i| named(policy, i)) {
            self.rec.dst_instance = Some(id);
            self.rec.dst_compartment = comp;
        }
    }

    pub fn stage(&mut self, stage: Stage) {
        self.rec.stage = stage;
    }

    pub fn request_bytes(&mut self, n: u64) {
        self.rec.request_bytes = n;
    }

    pub fn response_bytes(&mut self, n: u64) {
        self.rec.response_bytes = n;
    }

    pub fn carried(&mut self, c: Carried) {
        self.rec.uuids.extend(c.uuids);
        self.rec.uuids_truncated |= c.truncated;
    }

    /// Refused by the gateway at the current stage, answered `status`.
    pub fn block(&mut self, status: u16, reason: &str) {
        self.rec.decision = Decision::Block;
        self.rec.status = status;
        self.rec.reason = Some(reason.to_string());
    }

    /// Allowed by the policy (or monitored) but not delivered (upstream
    /// unreachable, timed out, broken answer): the client got `status`.
    pub fn failed(&mut self, status: u16, why: &str) {
        if self.rec.decision != Decision::WouldBlock {
            self.rec.decision = Decision::Allow;
        }
        self.rec.status = status;
        self.rec.reason = Some(why.to_string());
    }

    /// Monitor mode: the policy refused it (`reason`), it goes on.
    /// The first reason is kept (a monitored push whose answer would be
    /// refused too).
    pub fn would_block(&mut self, reason: &str) {
        if self.rec.decision != Decision::WouldBlock {
            self.rec.decision = Decision::WouldBlock;
            self.rec.reason = Some(reason.to_string());
        }
    }

    /// Forwarded and answered with the upstream's `status` (a monitor-mode
    /// `would_block` stays one).
    pub fn allow(&mut self, status: u16) {
        if self.rec.decision != Decision::WouldBlock {
            self.rec.decision = Decision::Allow;
        }
        self.rec.status = status;
    }
}

impl Trail<'_> {
    /// `request allowed: [METHOD]path -> status`, with the same fields as a
    /// block line, at the operator's level (`gateway.log_allowed`).
    fn log_allowed(&self, took: Duration) {
        macro_rules! line {
            ($level:expr) => {{
                let f = self.log_fields();
                tracing::event!(
                    $level,
                    client = %self.rec.client,
                    src = %f.src,
                    dst = %f.dst,
                    event_uuid = %f.uuids,
                    ms = took.as_millis() as u64,
                    "request allowed: [{}]{} -> {}",
                    Sanitized(&self.rec.method),
                    Sanitized(&self.rec.path),
                    self.rec.status
                )
            }};
        }
        use tracing::Level;
        match self.allowed_level {
            LogLevel::Off => {}
            LogLevel::Error => line!(Level::ERROR),
            LogLevel::Warn => line!(Level::WARN),
            LogLevel::Info => line!(Level::INFO),
            LogLevel::Debug => line!(Level::DEBUG),
            LogLevel::Trace => line!(Level::TRACE),
        }
    }
}

impl Drop for Trail<'_> {
    fn drop(&mut self) {
        let total = self.start.elapsed();
        let none = "none";
        self.metrics.exchange(&ExchangeSample {
            decision: self.rec.decision.as_str(),
            reason: self.rec.reason.as_deref(),
            endpoint: &self.endpoint,
            src: self.rec.src_instance.as_deref().unwrap_or(none),
            dst: self.rec.dst_instance.as_deref().unwrap_or(none),
            inspected_bytes: self.inspected_bytes,
            inspection: self.inspection,
            upstream: self.upstream,
            total,
        });
        if self.rec.decision == Decision::Allow {
            self.log_allowed(total);
        }
        let Some(sink) = self.sink else { return };
        self.rec.ts = audit::now_rfc3339();
        self.rec.duration_ms = total.as_secs_f64() * 1000.0;
        let uuids = std::mem::take(&mut self.rec.uuids);
        sink.record(Record {
            uuids,
            ..self.rec.clone()
        });
    }
}

/// An instance's id and its compartment's name, as audited.
fn named(policy: &Policy, id: InstanceId) -> (String, Option<String>) {
    let inst = policy.instance(id);
    let compartment = policy.compartments.get(inst.compartment.0 as usize);
    (inst.id.clone(), compartment.cloned())
}

/// A connection refused before any request was read (wrong original
/// destination, loop, refused CONNECT, SNI naming another destination).
pub struct ConnRefusal<'a> {
    pub mode: ListenMode,
    pub client: IpAddr,
    /// Transparent: the original destination.
    pub orig_dst: Option<SocketAddr>,
    /// The name the client asked for (CONNECT authority's host, or SNI).
    pub name: Option<&'a str>,
    /// What is audited as `path`: the original destination or the CONNECT
    /// authority, as the client gave it.
    pub asked: &'a str,
    pub sni: Option<&'a str>,
    /// `CONNECT` for a refused tunnel; empty when no request was read.
    pub method: &'a str,
    /// What the client was answered (0: closed without an answer).
    pub status: u16,
    pub reason: &'a str,
}

/// Audits and counts a [`ConnRefusal`] like a blocked exchange (stage
/// `connection`). Its log line is the caller's (`connection refused: …`).
pub fn connection_refused(
    sink: Option<&AuditLog>,
    metrics: &Metrics,
    policy: &Policy,
    conn: u64,
    r: &ConnRefusal<'_>,
) {
    let src = policy.instance_by_ip(r.client);
    let dst = r
        .orig_dst
        .and_then(|d| policy.instance_by_ip(d.ip()))
        .or_else(|| r.name.and_then(|n| policy.instance_by_host(n)));
    let (src_instance, src_compartment) = src.map(|i| named(policy, i)).unzip();
    let (dst_instance, dst_compartment) = dst.map(|i| named(policy, i)).unzip();
    let (src_compartment, dst_compartment) = (src_compartment.flatten(), dst_compartment.flatten());
    metrics.exchange(&ExchangeSample {
        decision: Decision::Block.as_str(),
        reason: Some(r.reason),
        endpoint: "connection",
        src: src_instance.as_deref().unwrap_or("none"),
        dst: dst_instance.as_deref().unwrap_or("none"),
        inspected_bytes: 0,
        inspection: Duration::ZERO,
        upstream: None,
        total: Duration::ZERO,
    });
    let Some(sink) = sink else { return };
    sink.record(Record {
        ts: audit::now_rfc3339(),
        conn,
        listener: r.mode.as_str(),
        client: r.client.to_string(),
        src_instance,
        src_compartment,
        dst_instance,
        dst_compartment,
        sni: r.sni.map(str::to_string),
        method: r.method.to_string(),
        path: audit::audited_path(r.asked),
        stage: Stage::Connection,
        decision: Decision::Block,
        reason: Some(r.reason.to_string()),
        status: r.status,
        request_bytes: 0,
        response_bytes: 0,
        uuids: Vec::new(),
        uuids_truncated: false,
        duration_ms: 0.0,
    });
}
