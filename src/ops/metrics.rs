//! Prometheus metrics of the running gateway, encoded by the maintained
//! `prometheus-client` crate (text exposition format) rather than by hand.
//!
//! Every label is bounded: instance ids and endpoints come from the
//! compiled policy, decisions/sides/kinds are fixed words, and block
//! reasons are reduced to their wording before the first `:` (so a tag,
//! path or address never becomes a label) with at most [`MAX_REASONS`]
//! distinct values. Paths and uuids are never labels.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Distinct `reason` label values kept; later ones are counted as `other`.
pub const MAX_REASONS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExchangeLabels {
    pub decision: &'static str,
    pub reason: String,
    pub endpoint: String,
    pub src: String,
    pub dst: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `client` (the gateway's own certificate) or `upstream`.
    pub side: &'static str,
    /// `timeout`, `refused` (policy or SNI), `error`.
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// What one finished exchange contributes.
pub struct ExchangeSample<'a> {
    pub decision: &'static str,
    pub reason: Option<&'a str>,
    pub endpoint: &'a str,
    pub src: &'a str,
    pub dst: &'a str,
    pub inspected_bytes: u64,
    pub inspection: Duration,
    pub upstream: Option<Duration>,
    pub total: Duration,
}

pub struct Metrics {
    registry: Registry,
    exchanges: Family<ExchangeLabels, Counter>,
    inspected_bytes: Counter,
    inspection_seconds: Histogram,
    upstream_seconds: Histogram,
    exchange_seconds: Histogram,
    pub active_connections: Gauge,
    handshake_failures: Family<HandshakeLabels, Counter>,
    upstream_errors: Family<KindLabels, Counter>,
    upstream_connections: Family<KindLabels, Counter>,
    upstream_pool_idle: Gauge,
    reloads: Family<ResultLabels, Counter>,
    config_generation: Gauge,
    audit_write_failures: Counter,
    rules_restorations: Counter,
    ready: Gauge,
    reasons: Mutex<BTreeSet<String>>,
}

fn seconds() -> Histogram {
    // 100 µs .. ~53 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("misp_guard_gw");
        let m = Metrics {
            exchanges: Family::default(),
            inspected_bytes: Counter::default(),
            inspection_seconds: seconds(),
            upstream_seconds: seconds(),
            exchange_seconds: seconds(),
            active_connections: Gauge::default(),
            handshake_failures: Family::default(),
            upstream_errors: Family::default(),
            upstream_connections: Family::default(),
            upstream_pool_idle: Gauge::default(),
            reloads: Family::default(),
            config_generation: Gauge::default(),
            audit_write_failures: Counter::default(),
            rules_restorations: Counter::default(),
            ready: Gauge::default(),
            reasons: Mutex::new(BTreeSet::new()),
            registry: Registry::default(),
        };
        registry.register(
            "exchanges",
            "Decided exchanges by decision (allow, block, would_block), reason, endpoint, source and destination instance",
            m.exchanges.clone(),
        );
        registry.register(
            "inspected_bytes",
            "Body bytes read by the policy (requests and responses, as on the wire)",
            m.inspected_bytes.clone(),
        );
        registry.register(
            "inspection_duration_seconds",
            "Time the engine spent deciding an exchange's bodies",
            m.inspection_seconds.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "From forwarding a request to the server's response head",
            m.upstream_seconds.clone(),
        );
        registry.register(
            "exchange_duration_seconds",
            "From the request head to the end of the answer",
            m.exchange_seconds.clone(),
        );
        registry.register(
            "active_connections",
            "Client connections being served",
            m.active_connections.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes by side (client, upstream) and cause",
            m.handshake_failures.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures by kind (connect, timeout, response)",
            m.upstream_errors.clone(),
        );
        registry.register(
            "upstream_connections",
            "Upstream connections an exchange went out on, by kind: opened (new TCP/TLS), pooled (idle, taken over from an earlier client connection), kept (held by the same client connection), stale (idle but found closed, discarded)",
            m.upstream_connections.clone(),
        );
        registry.register(
            "upstream_pool_idle",
            "Idle upstream connections in the shared pool",
            m.upstream_pool_idle.clone(),
        );
        registry.register(
            "reloads",
            "Policy reloads by result (ok, failed)",
            m.reloads.clone(),
        );
        registry.register(
            "config_generation",
            "Configuration generation: 1 at start, +1 per successful reload",
            m.config_generation.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Audit records lost (queue full, write or reopen failure)",
            m.audit_write_failures.clone(),
        );
        registry.register(
            "rules_restorations",
            "Times the guard/capture nftables tables were restored after disappearing or changing",
            m.rules_restorations.clone(),
        );
        registry.register(
            "ready",
            "1 when /readyz would answer 200, else 0 (evaluated at each scrape)",
            m.ready.clone(),
        );
        m.config_generation.set(1);
        Metrics { registry, ..m }
    }

    pub fn exchange(&self, s: &ExchangeSample<'_>) {
        let reason = match s.reason {
            None => String::new(),
            Some(r) => self.bounded_reason(r),
        };
        self.exchanges
            .get_or_create(&ExchangeLabels {
                decision: s.decision,
                reason,
                endpoint: s.endpoint.to_string(),
                src: s.src.to_string(),
                dst: s.dst.to_string(),
            })
            .inc();
        self.inspected_bytes.inc_by(s.inspected_bytes);
        if s.inspected_bytes > 0 {
            self.inspection_seconds.observe(s.inspection.as_secs_f64());
        }
        if let Some(u) = s.upstream {
            self.upstream_seconds.observe(u.as_secs_f64());
        }
        self.exchange_seconds.observe(s.total.as_secs_f64());
    }

    /// The reason's wording before its first `:` (drops the tag, type,
    /// address…), cut to 80 characters, among at most [`MAX_REASONS`].
    fn bounded_reason(&self, reason: &str) -> String {
        let head = reason.split(':').next().unwrap_or("").trim();
        let head: String = head.chars().filter(|c| !c.is_control()).take(80).collect();
        // Addresses and numbers vary per request; they are not a reason.
        let head: String = head
            .split(' ')
            .map(|w| {
                if w.chars().any(|c| c.is_ascii_digit()) {
                    "N"
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let mut seen = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&head) {
            return head;
        }
        if seen.len() >= MAX_REASONS {
            return "other".into();
        }
        seen.insert(head.clone());
        head
    }

    pub fn handshake_failure(&self, side: &'static str, cause: &'static str) {
        self.handshake_failures
            .get_or_create(&HandshakeLabels { side, cause })
            .inc();
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// An exchange's upstream connection: `opened`, `pooled`, `kept`, or
    /// a pooled one found `stale`.
    pub fn upstream_connection(&self, kind: &'static str) {
        self.upstream_connections
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Idle connections in the shared upstream pool now.
    pub fn upstream_pool_idle(&self, idle: usize) {
        self.upstream_pool_idle
            .set(i64::try_from(idle).unwrap_or(i64::MAX));
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        if ok {
            self.config_generation.inc();
        }
    }

    /// The text exposition; counters kept elsewhere (audit failures, rule
    /// restorations) are brought up to date first.
    pub fn render(&self, audit_failures: u64, restorations: u64, ready: bool) -> String {
        self.ready.set(i64::from(ready));
        catch_up(&self.audit_write_failures, audit_failures);
        catch_up(&self.rules_restorations, restorations);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Counters owned by other components are monotonic too: add what they
/// gained since the last scrape.
fn catch_up(c: &Counter, now: u64) {
    let have = c.get();
    if now > have {
        c.inc_by(now - have);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_bounded_labels() {
        let m = Metrics::new();
        assert_eq!(
            m.bounded_reason("event has blocked tag: tlp:red"),
            "event has blocked tag"
        );
        assert_eq!(
            m.bounded_reason("source host 10.1.2.3 does not exist in instances hosts mapping"),
            "source host N does not exist in instances hosts mapping"
        );
        // Distinct letter-only reasons (digits would all read N).
        let word = |i: usize| {
            let a = char::from(b'a' + (i % 26) as u8);
            let b = char::from(b'a' + (i / 26) as u8);
            format!("reason {a}{b}")
        };
        // Two distinct reasons are already known.
        for i in 0..MAX_REASONS - 2 {
            assert_eq!(m.bounded_reason(&word(i)), word(i));
        }
        assert_eq!(m.bounded_reason("yet another new reason"), "other");
    }

    #[test]
    fn exposition_names_the_metrics() {
        let m = Metrics::new();
        m.exchange(&ExchangeSample {
            decision: "block",
            reason: Some("event has blocked tag: tlp:red"),
            endpoint: "events_add",
            src: "a",
            dst: "b",
            inspected_bytes: 10,
            inspection: Duration::from_micros(300),
            upstream: None,
            total: Duration::from_millis(2),
        });
        m.reload(true);
        m.upstream_connection("opened");
        m.upstream_connection("pooled");
        m.upstream_connection("pooled");
        m.upstream_pool_idle(3);
        let text = m.render(3, 1, true);
        assert!(
            text.contains(r#"misp_guard_gw_upstream_connections_total{kind="pooled"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"misp_guard_gw_upstream_connections_total{kind="opened"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("misp_guard_gw_upstream_pool_idle 3"),
            "{text}"
        );
        assert!(text.contains(
            r#"misp_guard_gw_exchanges_total{decision="block",reason="event has blocked tag",endpoint="events_add",src="a",dst="b"} 1"#
        ), "{text}");
        assert!(text.contains("misp_guard_gw_config_generation 2"), "{text}");
        assert!(
            text.contains("misp_guard_gw_audit_write_failures_total 3"),
            "{text}"
        );
        assert!(
            text.contains("misp_guard_gw_rules_restorations_total 1"),
            "{text}"
        );
        assert!(
            text.contains("misp_guard_gw_inspected_bytes_total 10"),
            "{text}"
        );
        assert!(text.contains("misp_guard_gw_ready 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
