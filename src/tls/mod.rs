//! TLS layer of the gateway: its CA, leaf minting, the client-facing
//! (server) and server-facing (client) rustls configurations.
//!
//! Everything uses the *ring* provider explicitly (never the process-wide
//! default), so the outcome does not depend on which other crate happened to
//! enable which rustls backend.

pub mod ca;
pub mod client;
pub mod error;
pub mod mint;
pub mod server;
pub mod server_config;
pub mod source;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::SupportedProtocolVersion;

pub use ca::{der_to_pem, CertificateAuthority};
pub use client::{
    build_client_config, certificate_pin, connect, format_pin, parse_pin, UpstreamTlsOptions,
};
pub use error::{Result, TlsError};
pub use mint::{mint_leaf, LeafCache, MintedLeaf};
pub use server::{accept_with_sni, accept_with_sni_io};
pub use server_config::build_server_config;
pub use source::{CertSource, CertificateSource, StaticCert};

/// The only application protocol on either leg.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// TLS 1.2 and 1.3; nothing older exists in rustls anyway, but say it.
pub(crate) static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The ring provider, built once and shared by every config.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
