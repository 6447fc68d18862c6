//! Binding the gateway's listeners.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use crate::net::addr::unmap_socket_addr;
use crate::net::error::{hint, NetError};
use crate::vocab::ListenMode;

/// Binds a TCP listener for `kind` on `addr` and registers it with tokio
/// (call it from within a runtime).
///
/// - `SO_REUSEADDR`, so a restart does not wait out TIME_WAIT connections.
/// - On `[::]`, `IPV6_V6ONLY` off: one listener takes both families (IPv4
///   peers then appear as mapped addresses, which the typed addresses undo).
/// - For [`ListenMode::Tproxy`], `IP_TRANSPARENT`/`IPV6_TRANSPARENT` before
///   bind: the kernel's tproxy socket lookup only hands non-local
///   destinations to transparent sockets. Needs CAP_NET_ADMIN.
///
/// Errors name the step, the address and, for EPERM/EACCES, the capability.
pub fn bind_listener(addr: SocketAddr, kind: ListenMode, backlog: u32) -> io::Result<TcpListener> {
    // A mapped listen address would make a v6 socket that only sees v4;
    // binding the plain v4 address is what was meant.
    let addr = unmap_socket_addr(addr);
    let fail = |op: &'static str| {
        move |cause: io::Error| -> io::Error {
            let hint = hint(op, &cause);
            NetError::Listen {
                op,
                addr,
                cause,
                hint,
            }
            .into()
        }
    };

    // socket2 creates it with SOCK_CLOEXEC, so it does not leak into children.
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(fail("create socket"))?;
    sock.set_reuse_address(true)
        .map_err(fail("set SO_REUSEADDR"))?;
    if let SocketAddr::V6(v6) = addr {
        if v6.ip().is_unspecified() {
            sock.set_only_v6(false).map_err(fail("clear IPV6_V6ONLY"))?;
        }
    }
    if kind == ListenMode::Tproxy {
        // On an AF_INET6 socket IPV6_TRANSPARENT sets the same per-socket flag
        // that IPv4 tproxy lookups check, so a dual-stack `[::]` listener
        // needs only this one.
        match addr {
            SocketAddr::V4(_) => sock
                .set_ip_transparent_v4(true)
                .map_err(fail("set IP_TRANSPARENT"))?,
            SocketAddr::V6(_) => sock
                .set_ip_transparent_v6(true)
                .map_err(fail("set IPV6_TRANSPARENT"))?,
        }
    }
    sock.set_nonblocking(true).map_err(fail("set O_NONBLOCK"))?;
    sock.bind(&addr.into()).map_err(fail("bind"))?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    sock.listen(backlog).map_err(fail("listen"))?;
    TcpListener::from_std(sock.into()).map_err(fail("register with tokio"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::addr::ClientAddr;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::timeout;

    const T: Duration = Duration::from_secs(5);

    async fn roundtrip(l: &TcpListener, to: SocketAddr) -> ClientAddr {
        let (c, s) = tokio::join!(timeout(T, TcpStream::connect(to)), timeout(T, l.accept()));
        let mut c = c.unwrap().unwrap();
        let (mut s, peer) = s.unwrap().unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        timeout(T, s.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"ping");
        ClientAddr::new(peer)
    }

    #[tokio::test]
    async fn explicit_v4_loopback() {
        let l = bind_listener("127.0.0.1:0".parse().unwrap(), ListenMode::Explicit, 16).unwrap();
        let a = l.local_addr().unwrap();
        assert_eq!(
            roundtrip(&l, a).await.ip(),
            "127.0.0.1".parse::<std::net::IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn dual_stack_wildcard_takes_v4_and_v6() {
        let l = bind_listener("[::]:0".parse().unwrap(), ListenMode::Redirect, 16).unwrap();
        let port = l.local_addr().unwrap().port();
        // The v4 peer arrives as ::ffff:127.0.0.1 and is normalised.
        let v4 = roundtrip(&l, SocketAddr::from(([127, 0, 0, 1], port))).await;
        assert_eq!(v4.addr(), SocketAddr::from(([127, 0, 0, 1], v4.port())));
        let v6 = roundtrip(&l, format!("[::1]:{port}").parse().unwrap()).await;
        assert_eq!(v6.ip(), "::1".parse::<std::net::IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn bind_error_names_address() {
        let l = bind_listener("127.0.0.1:0".parse().unwrap(), ListenMode::Explicit, 4).unwrap();
        let a = l.local_addr().unwrap();
        // SO_REUSEADDR does not allow two listeners on one address.
        let err = bind_listener(a, ListenMode::Explicit, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("bind for listener {a}: ")),
            "{msg}"
        );
    }

    /// With CAP_NET_ADMIN a transparent listener may bind an address the host
    /// does not own (that is what tproxy relies on); without it the error
    /// must say which capability is missing.
    #[tokio::test]
    async fn tproxy_listener_binds_non_local_or_names_capability() {
        let addr: SocketAddr = "192.0.2.1:0".parse().unwrap();
        match bind_listener(addr, ListenMode::Tproxy, 4) {
            Ok(l) => assert_eq!(l.local_addr().unwrap().ip(), addr.ip()),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
                assert!(e.to_string().contains("needs CAP_NET_ADMIN"), "{e}");
                assert!(e.to_string().contains("192.0.2.1:0"), "{e}");
            }
        }
    }
}
