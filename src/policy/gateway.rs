//! Data-path settings from the config's optional `gateway` section:
//! listeners, TLS material, timeouts, per-instance upstream trust.
//! Compiled with the policy so one file describes the whole gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::vocab::ListenMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub mode: ListenMode,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Gateway CA that signs the leaves presented to clients.
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    /// Extra CA trusted for every upstream.
    pub upstream_ca: Option<PathBuf>,
    /// Accept any upstream certificate (like mitmproxy's `-k`); logged.
    pub insecure_upstream: bool,
    pub use_system_roots: bool,
}

/// Timeouts of the data path; defaults follow g3proxy's (DATAPATH.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub handshake: Duration,
    pub request_head: Duration,
    pub idle: Duration,
    /// How long an upstream connection may wait idle in the shared pool
    /// for the next request to its instance; zero: no pooling. Short by
    /// default: Apache, in front of most MISPs, closes idle connections
    /// after 5 s, and a connection it closes just as a request is sent
    /// fails that request.
    pub upstream_idle: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    /// Longest pause while reading or writing a body.
    pub body: Duration,
    /// Slowest a client's request body may come, in bytes per second: it
    /// may take `body_min_rate_grace` plus a second per this many bytes
    /// (`http::rate`), so a drip is cut however short its pauses are.
    pub body_min_rate: u64,
    pub body_min_rate_grace: Duration,
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            request_head: Duration::from_secs(30),
            idle: Duration::from_secs(300),
            upstream_idle: Duration::from_secs(4),
            upstream_connect: Duration::from_secs(10),
            upstream_response: Duration::from_secs(300),
            body: Duration::from_secs(60),
            body_min_rate: 1024,
            body_min_rate_grace: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What a block decision does (`gateway.mode`, per instance
/// `gateway.instances.<id>.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Blocks are enforced.
    #[default]
    Enforce,
    /// Content blocks are logged and audited as `would_block` and the
    /// message is forwarded unchanged (policy roll-out).
    Monitor,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "enforce" => Some(Mode::Enforce),
            "monitor" => Some(Mode::Monitor),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

/// Per-instance data-path settings (defaults when not configured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceGateway {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub upstream_ca: Option<PathBuf>,
    pub upstream_pin_sha256: Option<[u8; 32]>,
    pub insecure_upstream: bool,
    /// Overrides `GatewaySettings::mode` for this instance.
    pub mode: Option<Mode>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewaySettings {
    pub listeners: Vec<Listener>,
    pub tls: TlsSettings,
    pub timeouts: Timeouts,
    /// Indexed like `Policy::instances`.
    pub instances: Vec<InstanceGateway>,
    pub transparent_source: bool,
    /// Interfaces whose MISP traffic nftables captures (`nft` subcommand).
    pub capture_interfaces: Vec<String>,
    /// TPROXY policy routing owned by the gateway (`nft` subcommand and
    /// `scripts/apply-nftables.sh`).
    pub tproxy: TproxyRouting,
    /// `gateway.audit_log`: where the audit trail goes (`--audit-log` wins).
    pub audit_log: Option<PathBuf>,
    /// `gateway.mode`: the mode of instances without their own.
    pub mode: Mode,
    /// `gateway.metrics.listen`: health and metrics (`--metrics` wins).
    pub metrics_listen: Option<SocketAddr>,
    /// `gateway.log_allowed`: the level of each allowed exchange's log
    /// line (`--log-allowed` wins).
    pub log_allowed: LogLevel,
    /// `gateway.watch_config`: reload on a change of the config file
    /// (read at start; `--no-watch-config` wins).
    pub watch_config: bool,
}

/// A log level an operator chooses for a kind of line, or `Off`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    /// Allowed exchanges are as many as sync requests: not shown by the
    /// default `info` filter unless an operator asks for them.
    #[default]
    Debug,
    Trace,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl GatewaySettings {
    /// The mode of instance number `index` (as in `Policy::instances`).
    pub fn mode_of(&self, index: usize) -> Mode {
        self.instances
            .get(index)
            .and_then(|i| i.mode)
            .unwrap_or(self.mode)
    }
}

/// Mark set on TPROXY'd packets (matched with itself as mask, so other
/// mark bits coexist) and the routing table that mark selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TproxyRouting {
    pub mark: u32,
    pub table: u32,
}

impl Default for TproxyRouting {
    fn default() -> Self {
        TproxyRouting {
            mark: 0x1,
            table: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_through_their_names() {
        // check-config and the start/reload log print these names.
        for (m, name) in [(Mode::Enforce, "enforce"), (Mode::Monitor, "monitor")] {
            assert_eq!(m.as_str(), name);
            assert_eq!(Mode::parse(name), Some(m));
        }
        assert_eq!(Mode::parse("Monitor"), None);
    }
}
