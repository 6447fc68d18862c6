//! Recovering where the client really wanted to go.

use std::io;
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

use crate::net::addr::{ClientAddr, OrigDstAddr};
use crate::net::error::NetError;

/// Original destination of a connection captured by nftables `redirect` (or
/// `dnat`): asks conntrack via `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`.
///
/// The option is chosen by the family of the *peer* after unmapping: a `[::]`
/// listener sees IPv4 clients as `::ffff:a.b.c.d`, their conntrack entry is an
/// IPv4 one, and asking `IP6T_SO_ORIGINAL_DST` for it fails with ENOENT.
///
/// Errors concern this connection only (log it and close it): ENOENT, i.e. the
/// connection did not go through a NAT rule, becomes `ErrorKind::NotFound`
/// carrying [`NetError::NoNatEntry`]. Note that a connection made *directly*
/// to the listener while conntrack is active has an entry without NAT and
/// yields the listener's own address: check it with
/// [`LocalListeners::is_self`](crate::net::guard::LocalListeners::is_self).
pub fn original_dst_redirect(stream: &TcpStream) -> io::Result<OrigDstAddr> {
    let client = ClientAddr::new(stream.peer_addr()?);
    let sock = SockRef::from(stream);
    let raw = match client.addr() {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    };
    let raw = raw.map_err(|cause| orig_dst_error(client, cause))?;
    let dst = raw.as_socket().ok_or_else(|| {
        // The kernel fills a sockaddr_in/_in6; anything else is a kernel or
        // libc mismatch, still only this connection's problem.
        io::Error::from(NetError::OrigDst {
            client,
            cause: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected address family {}", raw.family()),
            ),
        })
    })?;
    Ok(OrigDstAddr::new(dst))
}

/// Original destination of a connection captured by nftables `tproxy`: the
/// kernel delivered it to our transparent listener without rewriting it, so
/// the accepted socket's local address *is* the destination (unmapped, since
/// a `[::]` listener reports IPv4 destinations as mapped addresses).
/// `SO_ORIGINAL_DST` does not apply here.
pub fn original_dst_tproxy(stream: &TcpStream) -> io::Result<OrigDstAddr> {
    Ok(OrigDstAddr::new(stream.local_addr()?))
}

/// Maps the getsockopt failure to the error the caller logs.
fn orig_dst_error(client: ClientAddr, cause: io::Error) -> io::Error {
    if cause.raw_os_error() == Some(libc::ENOENT) {
        NetError::NoNatEntry { client }.into()
    } else {
        NetError::OrigDst { client, cause }.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enoent_becomes_no_nat_entry() {
        let client = ClientAddr::new("[::ffff:10.9.8.7]:1234".parse().unwrap());
        let err = orig_dst_error(client, io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            "no NAT entry: connection was not redirected (client 10.9.8.7:1234)"
        );
    }

    #[test]
    fn other_errno_is_kept() {
        let client = ClientAddr::new("10.9.8.7:1234".parse().unwrap());
        let err = orig_dst_error(client, io::Error::from_raw_os_error(libc::ENOPROTOOPT));
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot read original destination of connection from 10.9.8.7:1234: "),
            "{msg}"
        );
        assert!(matches!(
            err.get_ref().and_then(|e| e.downcast_ref::<NetError>()),
            Some(NetError::OrigDst { .. })
        ));
    }

    #[tokio::test]
    async fn tproxy_dst_is_unmapped_local_addr() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(a), l.accept());
        let (_c, s) = (c.unwrap(), s.unwrap().0);
        assert_eq!(original_dst_tproxy(&s).unwrap().addr(), a);
    }
}
