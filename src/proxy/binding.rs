//! What a client connection is bound to, fixed before its first request:
//! how it reached the gateway and where it is going. One enum, so that an
//! impossible combination (a tunnel with an original destination, TLS on
//! absolute-form plain HTTP) cannot be built.

use std::net::{IpAddr, SocketAddr};

use crate::net::{ClientAddr, OrigDstAddr};
use crate::vocab::ListenMode;

/// The client's TLS session, once accepted.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// Server name from the ClientHello (lowercased), if it sent one.
    pub sni: Option<String>,
    /// The name the certificate was chosen for: the SNI, or without one the
    /// destination's own name. Every request's Host must name it.
    pub name: String,
}

#[derive(Debug, Clone)]
pub enum Binding {
    /// Captured by nftables (`Redirect` or `Tproxy`): the original
    /// destination, an instance's `ip:port` decided before any byte was read.
    Transparent {
        capture: ListenMode,
        orig_dst: OrigDstAddr,
        tls: Option<ClientTls>,
    },
    /// An explicit-proxy CONNECT tunnel to the authority `host:port`.
    Tunnel {
        host: String,
        port: u16,
        tls: Option<ClientTls>,
    },
    /// Explicit proxy without CONNECT: absolute-form plain-HTTP requests,
    /// each naming its own destination.
    AbsoluteForm,
}

/// A bound client connection.
#[derive(Debug, Clone)]
pub struct Target {
    pub client: ClientAddr,
    pub binding: Binding,
    /// Connection id in the audit trail.
    pub conn: u64,
}

impl Target {
    pub fn client_ip(&self) -> IpAddr {
        self.client.ip()
    }

    /// The listener mode the connection came through.
    pub fn mode(&self) -> ListenMode {
        match &self.binding {
            Binding::Transparent { capture, .. } => *capture,
            Binding::Tunnel { .. } | Binding::AbsoluteForm => ListenMode::Explicit,
        }
    }

    /// Original destination (transparent capture only).
    pub fn orig_dst(&self) -> Option<SocketAddr> {
        match &self.binding {
            Binding::Transparent { orig_dst, .. } => Some(orig_dst.addr()),
            _ => None,
        }
    }

    /// Port the client connected to (original destination or CONNECT
    /// port; 80 for absolute-form, whose requests name their own).
    pub fn port(&self) -> u16 {
        match &self.binding {
            Binding::Transparent { orig_dst, .. } => orig_dst.port(),
            Binding::Tunnel { port, .. } => *port,
            Binding::AbsoluteForm => 80,
        }
    }

    fn tls(&self) -> Option<&ClientTls> {
        match &self.binding {
            Binding::Transparent { tls, .. } | Binding::Tunnel { tls, .. } => tls.as_ref(),
            Binding::AbsoluteForm => None,
        }
    }

    /// The client speaks TLS (and so does the upstream leg).
    pub fn client_tls(&self) -> bool {
        self.tls().is_some()
    }

    pub fn sni(&self) -> Option<&str> {
        self.tls().and_then(|t| t.sni.as_deref())
    }

    /// The host every request's Host must name: the TLS name, or a
    /// tunnel's CONNECT host; none for plain transparent HTTP (the
    /// original destination decides) and absolute-form.
    pub fn bound_host(&self) -> Option<&str> {
        match &self.binding {
            Binding::Transparent { tls, .. } => tls.as_ref().map(|t| t.name.as_str()),
            Binding::Tunnel { host, tls, .. } => {
                Some(tls.as_ref().map_or(host.as_str(), |t| t.name.as_str()))
            }
            Binding::AbsoluteForm => None,
        }
    }

    pub fn absolute_form(&self) -> bool {
        matches!(self.binding, Binding::AbsoluteForm)
    }

    /// Records the accepted TLS session (not for absolute-form, which is
    /// plain HTTP by definition).
    pub fn with_tls(mut self, accepted: ClientTls) -> Target {
        match &mut self.binding {
            Binding::Transparent { tls, .. } | Binding::Tunnel { tls, .. } => *tls = Some(accepted),
            Binding::AbsoluteForm => {}
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientAddr {
        ClientAddr::new("10.1.0.1:40000".parse().unwrap())
    }

    #[test]
    fn each_binding_answers_for_itself() {
        let orig = OrigDstAddr::new("10.2.0.1:8443".parse().unwrap());
        let t = Target {
            client: client(),
            binding: Binding::Transparent {
                capture: ListenMode::Tproxy,
                orig_dst: orig,
                tls: None,
            },
            conn: 1,
        };
        assert_eq!(t.mode(), ListenMode::Tproxy);
        assert_eq!(t.orig_dst(), Some("10.2.0.1:8443".parse().unwrap()));
        assert_eq!(t.port(), 8443);
        assert!(!t.client_tls() && !t.absolute_form());
        assert_eq!(
            t.bound_host(),
            None,
            "plain transparent HTTP: no bound name"
        );
        let t = t.with_tls(ClientTls {
            sni: None,
            name: "b.example".into(),
        });
        assert!(t.client_tls());
        assert_eq!((t.sni(), t.bound_host()), (None, Some("b.example")));

        let tunnel = Target {
            client: client(),
            binding: Binding::Tunnel {
                host: "b.example".into(),
                port: 443,
                tls: None,
            },
            conn: 2,
        };
        assert_eq!(tunnel.mode(), ListenMode::Explicit);
        assert_eq!((tunnel.orig_dst(), tunnel.port()), (None, 443));
        assert_eq!(tunnel.bound_host(), Some("b.example"), "plain tunnel");
        let tunnel = tunnel.with_tls(ClientTls {
            sni: Some("b.example".into()),
            name: "b.example".into(),
        });
        assert_eq!(tunnel.sni(), Some("b.example"));

        let abs = Target {
            client: client(),
            binding: Binding::AbsoluteForm,
            conn: 3,
        }
        .with_tls(ClientTls {
            sni: None,
            name: "x".into(),
        });
        assert!(
            abs.absolute_form() && !abs.client_tls(),
            "no TLS on absolute-form"
        );
        assert_eq!(
            (abs.mode(), abs.port(), abs.bound_host()),
            (ListenMode::Explicit, 80, None)
        );
    }
}
