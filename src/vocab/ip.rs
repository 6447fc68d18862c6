//! IP addresses as the gateway compares them.
//!
//! A dual-stack `[::]` listener reports IPv4 peers as IPv4-mapped IPv6
//! addresses (`::ffff:192.0.2.1`). Left as is they never compare equal to the
//! IPv4 addresses in the configuration, and they make the kernel pick the
//! wrong original-destination option: every address is unmapped where it
//! enters (config values, sockets, typed addresses).

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

/// Turns an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) into plain IPv4.
///
/// Only the mapped range `::ffff:0:0/96` is converted: the deprecated
/// IPv4-*compatible* form (`::a.b.c.d`) would turn `::1` into `0.0.0.1`.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// [`unmap`] for a socket address; the port is kept. Flow info and scope id
/// have no IPv4 equivalent and are dropped for mapped addresses only.
pub fn unmap_socket_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Parses an IP literal and folds IPv4-mapped IPv6 (`::ffff:a.b.c.d`) to IPv4,
/// so the same peer compares equal however the socket reports it.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok().map(unmap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv6_folds_to_ipv4() {
        assert_eq!(parse_ip("::ffff:10.0.0.1"), parse_ip("10.0.0.1"));
        assert_eq!(parse_ip("fd00::1").unwrap().to_string(), "fd00::1");
        assert_eq!(parse_ip("10.0.0.256"), None);
        assert_eq!(
            parse_ip("::1").unwrap().to_string(),
            "::1",
            "not the compatible form"
        );
    }
}
