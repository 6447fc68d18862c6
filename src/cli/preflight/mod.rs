//! What `check-config` checks beyond the config's own syntax, so that it
//! catches what `run` would hit: every file the config names exists, is
//! readable by the service's user and is usable (CA valid, certificate and
//! key belong together, upstream CAs parse); the CA key's permissions pass
//! the same rule `run` warns on; TLS listeners have a certificate source.
//! Each finding names the JSON path of the setting it is about.

pub mod access;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::policy::Policy;
use crate::tls::{self, CertSource, CertificateAuthority, TlsError, UpstreamTlsOptions};
pub use access::{Identity, Reader, SERVICE_USER};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `run` would fail, or would run without being able to do its job.
    Error,
    /// `run` would work but warn, or something is likely wrong.
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// JSON path of the setting, e.g. `gateway.tls.ca_key`.
    pub at: String,
    pub message: String,
}

impl Finding {
    fn error(at: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Error,
            at: at.into(),
            message: message.into(),
        }
    }

    fn warning(at: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Warning,
            at: at.into(),
            message: message.into(),
        }
    }
}

/// Every check, in the order of the config file.
pub fn check(policy: &Policy, reader: &Reader) -> Vec<Finding> {
    let mut out = Vec::new();
    let g = &policy.gateway;
    if g.listeners.is_empty() {
        out.push(Finding::warning(
            "gateway.listeners",
            "no listeners: `run` then needs --explicit/--redirect/--tproxy",
        ));
    }
    let readable = |at: &str, path: &Path, out: &mut Vec<Finding>| match reader.check_read(path) {
        Ok(()) => true,
        Err(why) => {
            out.push(Finding::error(at, why));
            false
        }
    };

    // The gateway CA: both files readable, then usable as `run` loads it.
    let has_ca = match (&g.tls.ca_cert, &g.tls.ca_key) {
        (Some(cert), Some(key)) => {
            let ok = readable("gateway.tls.ca_cert", cert, &mut out)
                & readable("gateway.tls.ca_key", key, &mut out);
            if ok {
                if let Err(e) = CertificateAuthority::from_pem_files(cert, key) {
                    out.push(Finding::error(
                        tls_error_at(&e, key, "gateway.tls.ca_key", "gateway.tls.ca_cert"),
                        e.to_string(),
                    ));
                }
                if let Ok(meta) = std::fs::metadata(key) {
                    if let Some(problem) =
                        tls::ca::key_file_mode_problem(meta.mode(), meta.gid(), &reader.gids())
                    {
                        out.push(Finding::warning(
                            "gateway.tls.ca_key",
                            format!("{}: {problem}", key.display()),
                        ));
                    }
                }
            }
            true
        }
        _ => false,
    };
    if let Some(ca) = &g.tls.upstream_ca {
        if readable("gateway.tls.upstream_ca", ca, &mut out) {
            if let Err(e) = upstream_trust(Some(ca), None, false, false) {
                out.push(Finding::error("gateway.tls.upstream_ca", e.to_string()));
            }
        }
    }

    // Per instance: own certificate, upstream trust.
    let mut without_cert = Vec::new();
    for (inst, gi) in policy.instances.iter().zip(&g.instances) {
        let at = |field: &str| format!("gateway.instances.{}.{field}", inst.id);
        match (&gi.cert, &gi.key) {
            (Some(cert), Some(key)) => {
                let ok =
                    readable(&at("cert"), cert, &mut out) & readable(&at("key"), key, &mut out);
                if ok {
                    if let Err(e) = CertSource::from_pem_files(cert, key) {
                        out.push(Finding::error(
                            tls_error_at(&e, key, &at("key"), &at("cert")),
                            e.to_string(),
                        ));
                    }
                }
            }
            _ => without_cert.push(inst.id.as_str()),
        }
        let own_ca = gi.upstream_ca.is_some();
        if let Some(ca) = &gi.upstream_ca {
            if !readable(&at("upstream_ca"), ca, &mut out) {
                continue;
            }
        }
        // The same options `run` builds this instance's client config with.
        let insecure = g.tls.insecure_upstream || gi.insecure_upstream;
        let ca = gi.upstream_ca.as_ref().or(g.tls.upstream_ca.as_ref());
        match upstream_trust(ca.map(|p| p.as_path()), gi.upstream_pin_sha256, insecure, g.tls.use_system_roots) {
            Ok(()) => {}
            Err(TlsError::NoTrustAnchors { .. }) => out.push(Finding::warning(
                at("upstream_ca"),
                "no upstream trust (no CA file, no system store, no pin): connections to this instance will fail (502); fine only for an instance that is never a destination",
            )),
            // A broken global CA file is reported once, above.
            Err(_) if !own_ca => {}
            Err(e) => out.push(Finding::error(at("upstream_ca"), e.to_string())),
        }
        if insecure {
            out.push(Finding::warning(
                at("insecure_upstream"),
                "upstream TLS verification is off for this instance",
            ));
        }
    }

    // Every listener terminates TLS (transparent capture of HTTPS, CONNECT
    // tunnels): without a CA or a certificate, every handshake is refused.
    if !g.listeners.is_empty() && !has_ca {
        if without_cert.len() == policy.instances.len() {
            out.push(Finding::error(
                "gateway.tls",
                "no certificate source: the listeners terminate TLS and every handshake would be refused; set gateway.tls.ca_cert and ca_key (`misp-guard-gw ca --out DIR` makes them) or gateway.instances.<id>.cert and key",
            ));
        } else {
            for id in without_cert {
                out.push(Finding::warning(
                    format!("gateway.instances.{id}"),
                    "no certificate and no gateway CA: TLS connections to this instance are refused",
                ));
            }
        }
    }
    out
}

/// Which of a cert/key pair a TLS loading error is about.
fn tls_error_at(e: &TlsError, key: &Path, key_at: &str, cert_at: &str) -> String {
    if e.to_string().starts_with(&key.display().to_string()) {
        key_at.to_string()
    } else {
        cert_at.to_string()
    }
}

fn upstream_trust(
    ca: Option<&Path>,
    pin: Option<[u8; 32]>,
    insecure: bool,
    system: bool,
) -> Result<(), TlsError> {
    tls::build_client_config(&UpstreamTlsOptions {
        extra_ca_pem: ca.map(Path::to_path_buf),
        pin_sha256: pin,
        insecure,
        use_system_roots: system,
    })
    .map(drop)
}
