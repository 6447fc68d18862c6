//! Compiling the `gateway` section (listeners, TLS, timeouts, per-instance
//! upstream trust). Relative file paths are relative to the config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schema::{RawGateway, RawTimeouts, RawTls};
use super::CompileError;
use crate::policy::{
    GatewaySettings, InstanceGateway, ListenMode, Listener, LogLevel, Mode, Timeouts, TlsSettings,
    TproxyRouting,
};

pub fn compile(
    raw: RawGateway,
    instance_ids: &[&str],
    base: &Path,
    warnings: &mut Vec<String>,
) -> Result<GatewaySettings, CompileError> {
    let RawGateway {
        listeners,
        tls,
        timeouts,
        instances,
        transparent_source,
        capture_interfaces,
        tproxy_mark,
        tproxy_table,
        audit_log,
        mode,
        metrics,
        limits: _,
        log_allowed,
        watch_config,
    } = raw;
    let log_allowed = match log_allowed.as_deref() {
        None => LogLevel::default(),
        Some(l) => LogLevel::parse(l).ok_or_else(|| {
            (
                "gateway.log_allowed".to_string(),
                format!("{l:?} is not off, error, warn, info, debug or trace"),
            )
        })?,
    };
    let metrics_listen = match metrics {
        None => None,
        Some(m) => Some(m.listen.parse::<SocketAddr>().map_err(|_| {
            (
                "gateway.metrics.listen".to_string(),
                format!("{:?} is not ip:port", m.listen),
            )
        })?),
    };
    let mode = compile_mode(mode.as_deref(), "gateway.mode")?;
    let mut out = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        let at = |f: &str| format!("gateway.listeners[{i}].{f}");
        let mode = ListenMode::parse(&l.mode).ok_or_else(|| {
            (
                at("mode"),
                format!("{:?} is not redirect, tproxy or explicit", l.mode),
            )
        })?;
        let addr: SocketAddr = l
            .listen
            .parse()
            .map_err(|_| (at("listen"), format!("{:?} is not ip:port", l.listen)))?;
        if out.iter().any(|o: &Listener| o.addr == addr) {
            return Err((at("listen"), format!("{addr} is listed twice")));
        }
        out.push(Listener { mode, addr });
    }
    if transparent_source && !out.iter().any(|l| l.mode == ListenMode::Tproxy) {
        warnings
            .push("gateway.transparent_source is set but no tproxy listener is configured".into());
    }

    let path = |p: &Option<String>| p.as_ref().map(|p| base.join(p));
    let tls = tls.unwrap_or(RawTls {
        use_system_roots: true,
        ..Default::default()
    });
    let tls_settings = TlsSettings {
        ca_cert: path(&tls.ca_cert),
        ca_key: path(&tls.ca_key),
        upstream_ca: path(&tls.upstream_ca),
        insecure_upstream: tls.insecure_upstream,
        use_system_roots: tls.use_system_roots,
    };
    both_or_neither(
        &tls_settings.ca_cert,
        &tls_settings.ca_key,
        "gateway.tls",
        "ca_cert",
        "ca_key",
    )?;

    let mut per_instance = vec![InstanceGateway::default(); instance_ids.len()];
    for (id, raw) in instances.0 {
        let at = format!("gateway.instances.{id}");
        let idx = instance_ids
            .iter()
            .position(|i| *i == id)
            .ok_or_else(|| (at.clone(), format!("{id} is not an instance")))?;
        let pin = match &raw.upstream_pin_sha256 {
            None => None,
            Some(p) => Some(
                crate::tls::parse_pin(p)
                    .map_err(|e| (format!("{at}.upstream_pin_sha256"), e.to_string()))?,
            ),
        };
        let ig = InstanceGateway {
            cert: path(&raw.cert),
            key: path(&raw.key),
            upstream_ca: path(&raw.upstream_ca),
            upstream_pin_sha256: pin,
            insecure_upstream: raw.insecure_upstream,
            mode: raw
                .mode
                .as_deref()
                .map(|m| compile_mode(Some(m), &format!("{at}.mode")))
                .transpose()?,
        };
        both_or_neither(&ig.cert, &ig.key, &at, "cert", "key")?;
        per_instance[idx] = ig;
    }

    for (i, name) in capture_interfaces.iter().enumerate() {
        // Linux interface names: 1-15 bytes, no '/', whitespace or quotes
        // (they are written into nftables sets verbatim).
        let ok = !name.is_empty()
            && name.len() <= 15
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@:".contains(&b));
        if !ok {
            return Err((
                format!("gateway.capture_interfaces[{i}]"),
                format!("{name:?} is not an interface name"),
            ));
        }
    }

    let tproxy = compile_tproxy(tproxy_mark, tproxy_table)?;

    Ok(GatewaySettings {
        tproxy,
        capture_interfaces,
        listeners: out,
        tls: tls_settings,
        timeouts: compile_timeouts(timeouts.unwrap_or_default())?,
        instances: per_instance,
        transparent_source,
        audit_log: audit_log.map(|p| base.join(p)),
        mode,
        metrics_listen,
        log_allowed,
        watch_config: watch_config.unwrap_or(true),
    })
}

fn compile_mode(raw: Option<&str>, at: &str) -> Result<Mode, CompileError> {
    match raw {
        None => Ok(Mode::Enforce),
        Some(m) => Mode::parse(m)
            .ok_or_else(|| (at.to_string(), format!("{m:?} is not enforce or monitor"))),
    }
}

/// The TPROXY mark must have at least one bit (a zero mark matches every
/// packet); the table must not be one of the kernel's own (0 unspec,
/// 253 default, 254 main, 255 local): the gateway's routes would mix with
/// the router's and removing them would touch what it does not own.
fn compile_tproxy(mark: Option<u32>, table: Option<u32>) -> Result<TproxyRouting, CompileError> {
    let d = TproxyRouting::default();
    let mark = mark.unwrap_or(d.mark);
    if mark == 0 {
        return Err(("gateway.tproxy_mark".into(), "must not be 0".into()));
    }
    let table = table.unwrap_or(d.table);
    if matches!(table, 0 | 253..=255) {
        return Err((
            "gateway.tproxy_table".into(),
            format!("{table} is a reserved routing table (0, 253, 254, 255)"),
        ));
    }
    Ok(TproxyRouting { mark, table })
}

fn both_or_neither(
    a: &Option<PathBuf>,
    b: &Option<PathBuf>,
    at: &str,
    an: &str,
    bn: &str,
) -> Result<(), CompileError> {
    match (a, b) {
        (Some(_), None) => Err((format!("{at}.{bn}"), format!("required when {an} is set"))),
        (None, Some(_)) => Err((format!("{at}.{an}"), format!("required when {bn} is set"))),
        _ => Ok(()),
    }
}

fn compile_timeouts(raw: RawTimeouts) -> Result<Timeouts, CompileError> {
    let d = Timeouts::default();
    let secs = |v: Option<u64>, default: Duration, name: &str| match v {
        None => Ok(default),
        Some(0) => Err((
            format!("gateway.timeouts.{name}"),
            "must be greater than 0".to_string(),
        )),
        Some(n) if n > 86_400 => Err((
            format!("gateway.timeouts.{name}"),
            "must be at most 86400".to_string(),
        )),
        Some(n) => Ok(Duration::from_secs(n)),
    };
    Ok(Timeouts {
        handshake: secs(raw.handshake_secs, d.handshake, "handshake_secs")?,
        request_head: secs(raw.request_head_secs, d.request_head, "request_head_secs")?,
        idle: secs(raw.idle_secs, d.idle, "idle_secs")?,
        // Zero is meaningful here: pooling off.
        upstream_idle: match raw.upstream_idle_secs {
            Some(0) => Duration::ZERO,
            v => secs(v, d.upstream_idle, "upstream_idle_secs")?,
        },
        upstream_connect: secs(
            raw.upstream_connect_secs,
            d.upstream_connect,
            "upstream_connect_secs",
        )?,
        upstream_response: secs(
            raw.upstream_response_secs,
            d.upstream_response,
            "upstream_response_secs",
        )?,
        body: secs(raw.body_secs, d.body, "body_secs")?,
        body_min_rate: match raw.body_min_rate {
            None => d.body_min_rate,
            Some(0) => {
                return Err((
                    "gateway.timeouts.body_min_rate".into(),
                    "must be greater than 0 (bytes per second)".into(),
                ))
            }
            Some(n) => n,
        },
        body_min_rate_grace: secs(
            raw.body_min_rate_grace_secs,
            d.body_min_rate_grace,
            "body_min_rate_grace_secs",
        )?,
        shutdown_grace: secs(
            raw.shutdown_grace_secs,
            d.shutdown_grace,
            "shutdown_grace_secs",
        )?,
    })
}
