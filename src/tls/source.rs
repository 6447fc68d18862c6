//! Where the certificate shown to a client comes from: the operator's own
//! certificate for an instance ([`StaticCert`]) or a leaf minted per name by
//! the gateway CA ([`LeafCache`]). Both are a [`CertificateSource`];
//! [`CertSource`] holds either.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;

use crate::tls::ca::{load_certificates, load_private_key};
use crate::tls::error::{Result, TlsError};
use crate::tls::mint::LeafCache;
use crate::tls::server_config::build_server_config;

/// Gives the server configuration to present for `name` (the SNI, or — for
/// clients that send none — the destination's name or IP).
pub trait CertificateSource {
    fn server_config(
        &self,
        name: Option<&str>,
    ) -> impl Future<Output = Result<Arc<ServerConfig>>> + Send;
}

/// One certificate for an instance, loaded from PEM files. The config is
/// built once so all connections share its session-resumption state (and
/// the private key is not kept around a second time).
#[derive(Debug, Clone)]
pub struct StaticCert {
    /// The chain as loaded, leaf first (for logging/expiry checks).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The ready configuration.
    pub config: Arc<ServerConfig>,
}

impl StaticCert {
    /// From a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1
    /// or SEC1); the key must belong to the leaf.
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
        Ok(StaticCert { cert_chain, config })
    }
}

impl CertificateSource for StaticCert {
    /// The name does not matter: one certificate for the instance.
    async fn server_config(&self, _name: Option<&str>) -> Result<Arc<ServerConfig>> {
        Ok(self.config.clone())
    }
}

impl CertificateSource for LeafCache {
    /// A leaf needs a name to be minted for.
    async fn server_config(&self, name: Option<&str>) -> Result<Arc<ServerConfig>> {
        match name {
            Some(name) => self.server_config_for(name).await,
            None => Err(TlsError::refused(
                None,
                "no SNI and no fallback name to mint a certificate for",
            )),
        }
    }
}

/// Either source, as the TLS state holds them per instance.
#[derive(Debug, Clone)]
pub enum CertSource {
    Static(StaticCert),
    /// Leaves minted per server name by the gateway's CA.
    Minted(Arc<LeafCache>),
}

impl CertSource {
    /// A static source from PEM files (see [`StaticCert::from_pem_files`]).
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Self> {
        StaticCert::from_pem_files(cert_path, key_path).map(CertSource::Static)
    }
}

impl CertificateSource for CertSource {
    async fn server_config(&self, name: Option<&str>) -> Result<Arc<ServerConfig>> {
        match self {
            CertSource::Static(s) => s.server_config(name).await,
            CertSource::Minted(m) => m.server_config(name).await,
        }
    }
}
