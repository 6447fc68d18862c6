//! Loop guard: never connect upstream to ourselves.
//!
//! A client that dials the gateway's port directly, or traffic that escaped
//! the capture rule, yields the gateway's own address as "original
//! destination" (conntrack has an entry without NAT, or TPROXY delivered a
//! local destination). Connecting there would feed the gateway its own
//! connection, recursively, until descriptors run out.

use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::net::addr::{unmap, unmap_socket_addr, ListenAddr, OrigDstAddr};

/// The addresses the gateway listens on, normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalListeners(Vec<SocketAddr>);

impl LocalListeners {
    /// Collects listener addresses (e.g. each bound listener's `local_addr()`,
    /// so that port 0 has been resolved).
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self(addrs.into_iter().map(unmap_socket_addr).collect())
    }

    /// Adds one more listener.
    pub fn push(&mut self, addr: ListenAddr) {
        self.0.push(addr.addr());
    }

    /// The normalised listener addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.0
    }

    /// True when connecting to `dst` would reach one of our own listeners:
    /// same port, and either the same IP, or the listener is a wildcard and
    /// `dst` is one of the host's addresses (`local_ips`, from
    /// [`local_ip_addresses`]), a loopback address or unspecified (connecting
    /// to 0.0.0.0 / `::` reaches the local host).
    ///
    /// A wildcard of either family is treated as covering both: a `[::]`
    /// listener usually takes IPv4 too, and refusing the host's own address
    /// on our port when it would not is harmless.
    pub fn is_self(&self, dst: OrigDstAddr, local_ips: &[IpAddr]) -> bool {
        let ip = dst.ip();
        let host_owned =
            || ip.is_loopback() || ip.is_unspecified() || local_ips.iter().any(|&l| unmap(l) == ip);
        self.0.iter().any(|l| {
            l.port() == dst.port() && (l.ip() == ip || (l.ip().is_unspecified() && host_owned()))
        })
    }
}

impl From<Vec<ListenAddr>> for LocalListeners {
    fn from(addrs: Vec<ListenAddr>) -> Self {
        Self::new(addrs.into_iter().map(ListenAddr::addr))
    }
}

/// The IP addresses configured on this host's interfaces (in the current
/// network namespace), unmapped and without duplicates. Re-read it when
/// addresses may have changed (DHCP, interface added).
pub fn local_ip_addresses() -> io::Result<Vec<IpAddr>> {
    let mut ips = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue; // AF_PACKET entries and the like
        };
        let ip = unmap(ip);
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dst(s: &str) -> OrigDstAddr {
        OrigDstAddr::new(s.parse().unwrap())
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn specific_listener_matches_only_its_ip_and_port() {
        let g = LocalListeners::new(["10.0.0.1:8443".parse().unwrap()]);
        assert!(g.is_self(dst("10.0.0.1:8443"), &[]));
        assert!(g.is_self(dst("[::ffff:10.0.0.1]:8443"), &[]));
        assert!(!g.is_self(dst("10.0.0.1:443"), &[]));
        assert!(!g.is_self(dst("10.0.0.2:8443"), &ips(&["10.0.0.2"])));
        // Other local address on the same port: a specific listener does
        // not receive it, so that is not a loop.
        assert!(!g.is_self(dst("127.0.0.1:8443"), &[]));
    }

    #[test]
    fn wildcard_listener_matches_host_addresses() {
        let local = ips(&["192.0.2.10", "2001:db8::10", "::ffff:198.51.100.1"]);
        for l in ["0.0.0.0:8443", "[::]:8443"] {
            let g = LocalListeners::new([l.parse().unwrap()]);
            assert!(g.is_self(dst("192.0.2.10:8443"), &local), "{l}");
            assert!(g.is_self(dst("[2001:db8::10]:8443"), &local), "{l}");
            assert!(
                g.is_self(dst("198.51.100.1:8443"), &local),
                "{l}, mapped local ip"
            );
            assert!(
                g.is_self(dst("127.0.0.53:8443"), &local),
                "{l}, loopback range"
            );
            assert!(g.is_self(dst("[::1]:8443"), &local), "{l}");
            assert!(g.is_self(dst("0.0.0.0:8443"), &local), "{l}, unspecified");
            assert!(
                !g.is_self(dst("203.0.113.5:8443"), &local),
                "{l}, remote server"
            );
            assert!(!g.is_self(dst("192.0.2.10:443"), &local), "{l}, other port");
        }
    }

    #[test]
    fn mapped_listener_is_normalised() {
        let g = LocalListeners::new(["[::ffff:10.0.0.1]:9000".parse().unwrap()]);
        assert!(g.is_self(dst("10.0.0.1:9000"), &[]));
        let mut g = LocalListeners::default();
        assert!(!g.is_self(dst("10.0.0.1:9000"), &[]));
        g.push(ListenAddr::new("10.0.0.1:9000".parse().unwrap()));
        assert!(g.is_self(dst("10.0.0.1:9000"), &[]));
    }

    #[test]
    fn local_addresses_include_loopback() {
        let all = local_ip_addresses().unwrap();
        assert!(all.contains(&"127.0.0.1".parse().unwrap()), "{all:?}");
        assert!(all.iter().all(|ip| unmap(*ip) == *ip));
    }
}
