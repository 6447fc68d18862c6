//! Typed, normalised socket addresses.
//!
//! A dual-stack `[::]` listener reports IPv4 peers as IPv4-mapped IPv6
//! addresses (`::ffff:192.0.2.1`). Left as is they never compare equal to the
//! IPv4 addresses in the configuration, and they make the kernel pick the
//! wrong original-destination option. Every typed address therefore unmaps on
//! construction.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

pub use crate::vocab::{unmap, unmap_socket_addr};

macro_rules! typed_addr {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// The inner address is private so that every value went through
        /// [`unmap_socket_addr`]; build one with `new` or `From<SocketAddr>`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(SocketAddr);

        impl $name {
            /// Wraps `addr`, unmapping an IPv4-mapped IPv6 address.
            pub fn new(addr: SocketAddr) -> Self {
                Self(unmap_socket_addr(addr))
            }

            /// The (normalised) socket address.
            pub fn addr(self) -> SocketAddr {
                self.0
            }

            /// The (normalised) IP address.
            pub fn ip(self) -> IpAddr {
                self.0.ip()
            }

            /// The port.
            pub fn port(self) -> u16 {
                self.0.port()
            }
        }

        impl From<SocketAddr> for $name {
            fn from(addr: SocketAddr) -> Self {
                Self::new(addr)
            }
        }

        impl From<$name> for SocketAddr {
            fn from(addr: $name) -> SocketAddr {
                addr.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

typed_addr!(
    /// The address of the peer that connected to the gateway (the MISP
    /// instance initiating a sync).
    ClientAddr
);
typed_addr!(
    /// The destination the client originally dialled, before REDIRECT/TPROXY
    /// handed the connection to the gateway: where the gateway must connect.
    OrigDstAddr
);
typed_addr!(
    /// An address one of the gateway's own listeners is bound to.
    ListenAddr
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn unmap_mapped_v4() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(unmap(mapped), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    }

    #[test]
    fn unmap_leaves_real_v6_and_v4_alone() {
        for s in ["::1", "::", "2001:db8::1", "fe80::1", "::ffff:0:0:1"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(unmap(ip), ip, "{s}");
        }
        // IPv4-compatible (not mapped) must not be converted: ::1 is loopback.
        let compat = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0xc000, 0x0207));
        assert_eq!(unmap(compat), compat);
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(unmap(v4), v4);
    }

    #[test]
    fn unmap_socket_addr_keeps_port() {
        assert_eq!(
            unmap_socket_addr(sa("[::ffff:10.1.2.3]:8443")),
            sa("10.1.2.3:8443")
        );
        assert_eq!(
            unmap_socket_addr(sa("[2001:db8::1]:443")),
            sa("[2001:db8::1]:443")
        );
        assert_eq!(unmap_socket_addr(sa("10.1.2.3:1")), sa("10.1.2.3:1"));
    }

    #[test]
    fn typed_addrs_normalise_on_construction() {
        // A v4 client accepted on a [::] listener equals its config address.
        let seen = ClientAddr::new(sa("[::ffff:198.51.100.4]:50000"));
        let configured = ClientAddr::from(sa("198.51.100.4:50000"));
        assert_eq!(seen, configured);
        assert_eq!(seen.ip(), "198.51.100.4".parse::<IpAddr>().unwrap());
        assert_eq!(seen.port(), 50000);
        assert_eq!(seen.to_string(), "198.51.100.4:50000");

        let dst = OrigDstAddr::new(sa("[::ffff:203.0.113.9]:443"));
        assert_eq!(SocketAddr::from(dst), sa("203.0.113.9:443"));
        let l = ListenAddr::new(sa("[::]:8443"));
        assert_eq!(l.addr(), sa("[::]:8443"));
    }
}
