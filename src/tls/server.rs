//! The client-facing leg: the gateway plays the server.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::Acceptor;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::tls::ca::{load_certificates, load_private_key};
use crate::tls::error::{Result, TlsError};
use crate::tls::mint::LeafCache;
use crate::tls::{provider, ALPN_HTTP11, PROTOCOL_VERSIONS};

/// A `ServerConfig` presenting `cert_chain` (leaf first) with `key`:
/// TLS 1.2 and 1.3 only, ALPN exactly `http/1.1`.
///
/// ALPN is pinned so that no client negotiates h2 with the gateway: the
/// filter speaks HTTP/1.1 only, and a client offering only h2 is refused by
/// rustls with `no_application_protocol` rather than misparsed.
pub fn build_server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>> {
    let config_err = |source| TlsError::Config {
        what: "server certificate".to_owned(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(config_err)?
        .with_no_client_auth()
        // Also checks that the key belongs to the leaf.
        .with_single_cert(cert_chain, key)
        .map_err(config_err)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Where the certificate presented to clients comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// One certificate for the instance, loaded from PEM files. The config
    /// is built once so all connections share its session-resumption state
    /// (and the private key is not kept around a second time).
    Static {
        /// The chain as loaded, leaf first (for logging/expiry checks).
        cert_chain: Vec<CertificateDer<'static>>,
        /// The ready configuration.
        config: Arc<ServerConfig>,
    },
    /// Leaves minted per server name by the gateway's CA.
    Minted(Arc<LeafCache>),
}

impl CertSource {
    /// A static source from a PEM certificate chain and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let cert_chain = load_certificates(cert_path)?;
        let key_bytes = std::fs::read(key_path).map_err(|e| TlsError::io(key_path, e))?;
        let key = load_private_key(key_path, &key_bytes)?;
        let config = build_server_config(cert_chain.clone(), key).map_err(|e| {
            TlsError::bad_file(
                key_path,
                format!("unusable with certificate {}: {e}", cert_path.display()),
            )
        })?;
        Ok(CertSource::Static { cert_chain, config })
    }

    /// The configuration to present for `name` (the SNI, or — for clients
    /// that send none — the original destination IP). A static source
    /// ignores the name; a minted one needs it.
    pub async fn server_config(&self, name: Option<&str>) -> Result<Arc<ServerConfig>> {
        match self {
            CertSource::Static { config, .. } => Ok(config.clone()),
            CertSource::Minted(cache) => match name {
                Some(name) => cache.server_config_for(name).await,
                None => Err(TlsError::refused(
                    None,
                    "no SNI and no fallback name to mint a certificate for",
                )),
            },
        }
    }
}

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
