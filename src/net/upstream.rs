//! Opening the connection to the real server.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::net::addr::{unmap, unmap_socket_addr};
use crate::net::error::{hint, NetError};

/// Connects to `dst` within `timeout`.
///
/// With `transparent_source = Some(ip)` the connection leaves from `ip` (the
/// client's own address, for a gateway invisible to the server too): the
/// socket gets `IP_TRANSPARENT`/`IPV6_TRANSPARENT` (CAP_NET_ADMIN) so it may
/// bind an address the host does not own, and `IP_BIND_ADDRESS_NO_PORT` so
/// bind(ip:0) does not reserve an ephemeral port per source address up front
/// (the port is picked at connect time against the full 4-tuple; reusing the
/// client's port instead would risk EADDRINUSE). Replies only come back if the
/// policy routing of the TPROXY setup (fwmark → local) covers them.
///
/// `TCP_NODELAY` is set: the gateway forwards whole heads/bodies it already
/// buffered, Nagle would only add latency. A missed deadline is
/// `ErrorKind::TimedOut`; other errors keep the OS error's kind.
pub async fn connect_upstream(
    dst: SocketAddr,
    transparent_source: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    // Destinations may come from a `[::]` listener's view; the kernel wants a
    // socket of the real family.
    let dst = unmap_socket_addr(dst);
    let source_ip = transparent_source.map(unmap);
    let stream = match tokio::time::timeout(timeout, connect_inner(dst, source_ip)).await {
        Ok(res) => res?,
        Err(_elapsed) => {
            return Err(NetError::UpstreamTimeout {
                dst,
                source_ip,
                timeout,
            }
            .into());
        }
    };
    stream.set_nodelay(true).map_err(|cause| {
        io::Error::from(NetError::Upstream {
            op: "set TCP_NODELAY",
            dst,
            source_ip,
            cause,
            hint: "",
        })
    })?;
    Ok(stream)
}

async fn connect_inner(dst: SocketAddr, source_ip: Option<IpAddr>) -> io::Result<TcpStream> {
    let fail = |op: &'static str| {
        move |cause: io::Error| -> io::Error {
            let hint = hint(op, &cause);
            NetError::Upstream {
                op,
                dst,
                source_ip,
                cause,
                hint,
            }
            .into()
        }
    };
    let Some(src) = source_ip else {
        return TcpStream::connect(dst).await.map_err(fail("connect"));
    };
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(fail("bind")(io::Error::new(
            io::ErrorKind::InvalidInput,
            "transparent source and destination are of different address families",
        )));
    }

    let sock = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))
        .map_err(fail("create socket"))?;
    match dst {
        SocketAddr::V4(_) => {
            sock.set_ip_transparent_v4(true)
                .map_err(fail("set IP_TRANSPARENT"))?;
            setsockopt(&sock, sockopt::IpBindAddressNoPort, &true)
                .map_err(|e| fail("set IP_BIND_ADDRESS_NO_PORT")(e.into()))?;
        }
        SocketAddr::V6(_) => {
            sock.set_ip_transparent_v6(true)
                .map_err(fail("set IPV6_TRANSPARENT"))?;
            // The flag is an IPv4-level option that Linux also honours for
            // IPv6 binds; without it we merely reserve the port early, so a
            // kernel that refuses it is not worth failing the connection.
            if let Err(e) = setsockopt(&sock, sockopt::IpBindAddressNoPort, &true) {
                tracing::debug!(%dst, error = %e, "IP_BIND_ADDRESS_NO_PORT unavailable on IPv6 socket");
            }
        }
    }
    sock.set_nonblocking(true).map_err(fail("set O_NONBLOCK"))?;
    sock.bind(&SocketAddr::new(src, 0).into())
        .map_err(fail("bind"))?;
    // Hand the bound, unconnected socket to tokio for a non-blocking connect.
    let sock = TcpSocket::from_std_stream(sock.into());
    sock.connect(dst).await.map_err(fail("connect"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn plain_connect_v4_and_v6_loopback() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let l = tokio::net::TcpListener::bind(bind).await.unwrap();
            let a = l.local_addr().unwrap();
            let (c, s) = tokio::join!(connect_upstream(a, None, T), l.accept());
            let c = c.unwrap();
            assert!(c.nodelay().unwrap());
            assert_eq!(s.unwrap().1, c.local_addr().unwrap());
        }
    }

    #[tokio::test]
    async fn refused_port_fails_fast() {
        // Bind then drop to get a port that is very likely closed.
        let a = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let start = Instant::now();
        let err = connect_upstream(a, None, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "took {:?}",
            start.elapsed()
        );
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&a.to_string()), "{err}");
    }

    #[tokio::test]
    async fn deadline_gives_timed_out() {
        // A full backlog makes further SYNs go unanswered, so connect hangs
        // until our deadline, all on loopback. Backlog 0 still admits one.
        let l = crate::net::listen::bind_listener(
            "127.0.0.1:0".parse().unwrap(),
            crate::vocab::ListenMode::Explicit,
            0,
        )
        .unwrap();
        let a = l.local_addr().unwrap();
        let mut held = Vec::new();
        let mut saw_timeout = false;
        for _ in 0..8 {
            match connect_upstream(a, None, Duration::from_millis(300)).await {
                Ok(s) => held.push(s),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
                    assert!(e.to_string().contains("timed out after 300ms"), "{e}");
                    saw_timeout = true;
                    break;
                }
            }
        }
        assert!(
            saw_timeout,
            "backlog never filled ({} connected)",
            held.len()
        );
    }

    #[tokio::test]
    async fn transparent_source_family_mismatch_is_invalid_input() {
        let err = connect_upstream(
            "127.0.0.1:9".parse().unwrap(),
            Some("::1".parse().unwrap()),
            T,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    }

    /// Exercises the transparent path on loopback with a local source (works
    /// with CAP_NET_ADMIN; without it the error must name the capability).
    #[tokio::test]
    async fn transparent_source_local_address() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        let src: IpAddr = "127.0.0.5".parse().unwrap();
        // The backlog completes the handshake, so accept only afterwards.
        match connect_upstream(a, Some(src), T).await {
            Ok(c) => {
                assert_eq!(c.local_addr().unwrap().ip(), src);
                let (_, peer) = tokio::time::timeout(T, l.accept()).await.unwrap().unwrap();
                assert_eq!(peer.ip(), src);
            }
            Err(e) => assert!(e.to_string().contains("needs CAP_NET_ADMIN"), "{e}"),
        }
    }
}
