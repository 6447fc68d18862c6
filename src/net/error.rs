//! Errors of the socket layer.
//!
//! The public functions return `io::Result` so they compose with tokio, but
//! the `io::Error` carries a [`NetError`] (reachable with
//! `err.get_ref().and_then(|e| e.downcast_ref::<NetError>())`) whose message
//! names the address involved and, where the cause is a missing privilege, the
//! capability to grant. The `io::ErrorKind` of the underlying failure is kept.
//! The OS error is part of the message (field `cause`) rather than exposed as
//! `source()`, so a log line of the error alone is complete and error-chain
//! printers do not repeat it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::net::addr::ClientAddr;

/// What went wrong, with enough context to act on it from a log line.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// `SO_ORIGINAL_DST` found no conntrack NAT entry: the connection reached
    /// the listener directly instead of through the REDIRECT rule. Affects
    /// this connection only.
    #[error("no NAT entry: connection was not redirected (client {client})")]
    NoNatEntry {
        /// Who connected.
        client: ClientAddr,
    },
    /// Reading the original destination failed for another reason.
    #[error("cannot read original destination of connection from {client}: {cause}")]
    OrigDst {
        /// Who connected.
        client: ClientAddr,
        /// The OS error.
        cause: io::Error,
    },
    /// Creating, configuring or binding a listener failed.
    #[error("{op} for listener {addr}: {cause}{hint}")]
    Listen {
        /// The step that failed (e.g. "set IP_TRANSPARENT", "bind").
        op: &'static str,
        /// The address that was to be bound.
        addr: SocketAddr,
        /// The OS error.
        cause: io::Error,
        /// A remedy, e.g. " (needs CAP_NET_ADMIN)", or empty.
        hint: &'static str,
    },
    /// Opening the upstream connection failed.
    #[error("{op} for upstream {dst}{}: {cause}{hint}", via(*.source_ip))]
    Upstream {
        /// The step that failed.
        op: &'static str,
        /// The upstream server.
        dst: SocketAddr,
        /// The spoofed (transparent) source address, if any.
        source_ip: Option<IpAddr>,
        /// The OS error.
        cause: io::Error,
        /// A remedy or empty.
        hint: &'static str,
    },
    /// The upstream connection did not complete in time.
    #[error("connect to upstream {dst}{} timed out after {timeout:?}", via(*.source_ip))]
    UpstreamTimeout {
        /// The upstream server.
        dst: SocketAddr,
        /// The spoofed (transparent) source address, if any.
        source_ip: Option<IpAddr>,
        /// The deadline that passed.
        timeout: Duration,
    },
}

fn via(source_ip: Option<IpAddr>) -> String {
    source_ip
        .map(|ip| format!(" from {ip}"))
        .unwrap_or_default()
}

impl NetError {
    /// The `io::ErrorKind` this error maps to: the OS error's own kind where
    /// there is one, so callers can still match on `ConnectionRefused` etc.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            NetError::NoNatEntry { .. } => io::ErrorKind::NotFound,
            NetError::UpstreamTimeout { .. } => io::ErrorKind::TimedOut,
            NetError::OrigDst { cause, .. }
            | NetError::Listen { cause, .. }
            | NetError::Upstream { cause, .. } => cause.kind(),
        }
    }
}

impl From<NetError> for io::Error {
    fn from(e: NetError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// The remedy to print for an OS error, given the step that raised it.
///
/// EPERM on the transparent options (and on a non-local bind) means the
/// process lacks CAP_NET_ADMIN; EACCES on bind means a port below 1024
/// without CAP_NET_BIND_SERVICE.
pub(crate) fn hint(op: &str, err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN)",
        Some(libc::EACCES) if op == "bind" => " (needs CAP_NET_BIND_SERVICE for ports below 1024)",
        Some(libc::EADDRINUSE) if op == "bind" => {
            " (another process or listener holds this address)"
        }
        Some(libc::EADDRNOTAVAIL) if op == "bind" => {
            " (address is not configured on this host; transparent binds need IP_TRANSPARENT)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_nat_entry_message_and_kind_are_pinned() {
        let client = ClientAddr::new("[::ffff:192.0.2.1]:40000".parse().unwrap());
        let err: io::Error = NetError::NoNatEntry { client }.into();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            "no NAT entry: connection was not redirected (client 192.0.2.1:40000)"
        );
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<NetError>());
        assert!(matches!(inner, Some(NetError::NoNatEntry { .. })));
    }

    #[test]
    fn eperm_names_capability_and_address() {
        let addr: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let cause = io::Error::from_raw_os_error(libc::EPERM);
        let h = hint("set IP_TRANSPARENT", &cause);
        let err: io::Error = NetError::Listen {
            op: "set IP_TRANSPARENT",
            addr,
            cause,
            hint: h,
        }
        .into();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let msg = err.to_string();
        assert!(
            msg.starts_with("set IP_TRANSPARENT for listener 0.0.0.0:8443: "),
            "{msg}"
        );
        assert!(msg.ends_with(" (needs CAP_NET_ADMIN)"), "{msg}");
    }

    #[test]
    fn eacces_bind_names_bind_capability() {
        let source = io::Error::from_raw_os_error(libc::EACCES);
        assert!(hint("bind", &source).contains("CAP_NET_BIND_SERVICE"));
        assert_eq!(hint("connect", &source), "");
    }

    #[test]
    fn timeout_message_and_kind_are_pinned() {
        let err: io::Error = NetError::UpstreamTimeout {
            dst: "192.0.2.9:443".parse().unwrap(),
            source_ip: Some("10.0.0.5".parse().unwrap()),
            timeout: Duration::from_millis(1500),
        }
        .into();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            err.to_string(),
            "connect to upstream 192.0.2.9:443 from 10.0.0.5 timed out after 1.5s"
        );
    }
}
