//! Building the `ServerConfig` the gateway presents to clients: one place
//! for the protocol versions and ALPN every client-facing leg uses (the
//! static and the minted certificate sources both build through it).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::tls::error::{Result, TlsError};
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
