//! The client-facing leg: the gateway plays the server. Accepting reads the
//! ClientHello first, so the certificate can be chosen by SNI (see
//! [`crate::tls::source`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::Acceptor;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::tls::error::{Result, TlsError};

/// Accepts TLS on `stream`: reads the ClientHello, passes its SNI
/// (lowercased; `None` if absent) to `choose`, which returns the config to
/// use or an error to refuse the client (the connection is then dropped),
/// and completes the handshake.
///
/// One `deadline` covers all of it: a client that stalls in the ClientHello,
/// or after it, holds a socket and a task for no longer than that.
pub async fn accept_with_sni<F, Fut>(
    stream: TcpStream,
    choose: F,
    deadline: Duration,
) -> Result<(TlsStream<TcpStream>, Option<String>)>
where
    F: FnOnce(Option<String>) -> Fut,
    Fut: Future<Output = Result<Arc<ServerConfig>>>,
{
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown peer".to_owned(), |a| a.to_string());
    accept_with_sni_io(stream, &peer, choose, deadline).await
}

/// [`accept_with_sni`] over any byte stream (e.g. one that replays peeked
/// bytes); `peer` names the client in errors.
pub async fn accept_with_sni_io<IO, F, Fut>(
    io: IO,
    peer: &str,
    choose: F,
    deadline: Duration,
) -> Result<(TlsStream<IO>, Option<String>)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(Option<String>) -> Fut,
    Fut: Future<Output = Result<Arc<ServerConfig>>>,
{
    let handshake_err = |source| TlsError::Handshake {
        peer: peer.to_owned(),
        source,
    };
    let handshake = async {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io)
            .await
            .map_err(handshake_err)?;
        // SNI is case-insensitive; lowercase so callers can compare it with
        // their configured names directly.
        let sni = start
            .client_hello()
            .server_name()
            .map(str::to_ascii_lowercase);
        let config = choose(sni.clone()).await.map_err(|e| match e {
            TlsError::Refused {
                peer: p,
                sni: s,
                reason,
            } if p.is_empty() => TlsError::Refused {
                peer: peer.to_owned(),
                sni: s,
                reason,
            },
            other => other,
        })?;
        let tls = start.into_stream(config).await.map_err(handshake_err)?;
        Ok((tls, sni))
    };
    tokio::time::timeout(deadline, handshake)
        .await
        .unwrap_or_else(|_| {
            Err(TlsError::HandshakeTimeout {
                peer: peer.to_owned(),
                deadline,
            })
        })
}
