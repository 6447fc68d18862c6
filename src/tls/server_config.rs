//! Building the `ServerConfig` the gateway presents to clients: one place
//! for the protocol versions and ALPN every client-facing leg uses (the
//! static and the minted certificate sources both build through it).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;

use crate::tls::error::{Result, TlsError};
use crate::tls::{provider, ALPN_HTTP11, PROTOCOL_VERSIONS};

/// Sessions a client may resume, per certificate (server name): each
/// costs a few hundred bytes; the minted-leaf cache bounds how many
/// configs exist.
pub const RESUMABLE_SESSIONS: usize = 256;

/// A `ServerConfig` presenting `cert_chain` (leaf first) with `key`:
/// TLS 1.2 and 1.3 only, ALPN exactly `http/1.1`, and session resumption
/// for clients that come back (a MISP opening a connection per request
/// skips the certificate and key exchange on all but the first).
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
    // A session cache in memory (TLS 1.2 session ids, TLS 1.3 tickets that
    // name a cached session), one per config and so per certificate: a
    // session is never resumed under another certificate, and rustls
    // refuses one whose SNI differs. Stateless tickets are not used: their
    // key would be one more secret to rotate, for no gain at this scale.
    // rustls' default is the same cache; it is set here so the behaviour
    // does not depend on that default.
    config.session_storage = ServerSessionMemoryCache::new(RESUMABLE_SESSIONS);
    Ok(Arc::new(config))
}
