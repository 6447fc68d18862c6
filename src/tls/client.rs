//! The server-facing leg: the gateway plays the client towards the real
//! MISP server.

use std::fmt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::ca::load_certificates;
use crate::tls::error::{Result, TlsError};
use crate::tls::{provider, ALPN_HTTP11, PROTOCOL_VERSIONS};

/// How the gateway verifies the real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsOptions {
    /// PEM file with extra trust anchors (e.g. the organisation's CA).
    pub extra_ca_pem: Option<PathBuf>,
    /// SHA-256 of the server's end-entity certificate (DER). Checked in
    /// addition to the chain, or alone when `insecure` is set.
    pub pin_sha256: Option<[u8; 32]>,
    /// Skip chain and name verification (handshake signatures are still
    /// checked). Explicit and logged.
    pub insecure: bool,
    /// Trust the operating system's CA store.
    pub use_system_roots: bool,
}

impl Default for UpstreamTlsOptions {
    /// Verify against the system store: the safe default.
    fn default() -> Self {
        UpstreamTlsOptions {
            extra_ca_pem: None,
            pin_sha256: None,
            insecure: false,
            use_system_roots: true,
        }
    }
}

/// The client config for the upstream leg: TLS 1.2/1.3, ALPN exactly
/// `http/1.1` (so the server never picks h2, which the filter does not
/// speak), verification as `opts` says.
pub fn build_client_config(opts: &UpstreamTlsOptions) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;

    // Only with `insecure` and a pin is the chain not needed at all; then
    // do not even require trust anchors.
    let chain_verifier = if opts.insecure {
        None
    } else {
        let (roots, system) = trust_anchors(opts)?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|_| TlsError::NoTrustAnchors { system })?;
        Some(verifier)
    };
    if opts.insecure {
        if opts.pin_sha256.is_some() {
            tracing::warn!(
                "upstream TLS: insecure mode with a pin: only the pinned certificate is accepted, \
                 its chain, name and validity are not checked"
            );
        } else {
            tracing::warn!(
                "upstream TLS: insecure mode: server certificates are NOT verified; \
                 anyone on the path can impersonate the server"
            );
        }
    }

    let verifier: Arc<dyn ServerCertVerifier> = match (chain_verifier, opts.pin_sha256) {
        // The stock verifier, untouched, for the ordinary case.
        (Some(chain), None) => chain,
        (chain, pin) => Arc::new(UpstreamVerifier {
            chain,
            pin,
            algorithms,
        }),
    };

    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Config {
            what: "upstream client".to_owned(),
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// System roots (if asked for; a missing or empty store is only a warning,
/// since the extra CA or a pin may be all that is needed) plus the extra CA
/// file (whose problems are errors: the operator named it explicitly).
fn trust_anchors(opts: &UpstreamTlsOptions) -> Result<(RootCertStore, &'static str)> {
    let mut roots = RootCertStore::empty();
    let mut system = "disabled";
    if opts.use_system_roots {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "upstream TLS: problem loading system CA store");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::debug!(
                ignored,
                "upstream TLS: unusable certificates in system store"
            );
        }
        if added == 0 {
            tracing::warn!("upstream TLS: system CA store is empty or missing");
            system = "empty or missing";
        } else {
            system = "in use";
        }
    }
    if let Some(path) = &opts.extra_ca_pem {
        add_extra_ca(&mut roots, path)?;
    }
    Ok((roots, system))
}

fn add_extra_ca(roots: &mut RootCertStore, path: &Path) -> Result<()> {
    for cert in load_certificates(path)? {
        roots.add(cert).map_err(|e| {
            TlsError::bad_file(
                path,
                format!("certificate is not a usable trust anchor: {e}"),
            )
        })?;
    }
    Ok(())
}

/// Chain verification (unless insecure) AND pin match (if pinned).
/// Handshake signatures are always verified with the provider's algorithms:
/// even in insecure mode the server must prove it holds the key of the
/// certificate it sent, or a pin would mean nothing.
struct UpstreamVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    pin: Option<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for UpstreamVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamVerifier")
            .field("chain", &self.chain.is_some())
            .field("pin", &self.pin.map(|p| format_pin(&p)))
            .finish()
    }
}

/// A pin mismatch, carried to the handshake error.
struct PinMismatch {
    expected: [u8; 32],
    actual: [u8; 32],
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server certificate SHA-256 {} does not match pin {}",
            format_pin(&self.actual),
            format_pin(&self.expected)
        )
    }
}

// rustls prints `CertificateError::Other` with `{:?}`: make that readable
// (hex fingerprints, not arrays of decimal bytes) in the operator's log.
impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        if let Some(expected) = self.pin {
            let actual = certificate_pin(end_entity);
            // Not secret: no need for constant-time comparison.
            if actual != expected {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(PinMismatch { expected, actual })),
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Connects TLS over `tcp` to `server_name` (a DNS name, or an IP literal —
/// then no SNI is sent and the certificate must carry an IP SAN), within
/// `deadline`.
pub async fn connect(
    config: Arc<ClientConfig>,
    server_name: &str,
    tcp: TcpStream,
    deadline: Duration,
) -> Result<TlsStream<TcpStream>> {
    let peer = match tcp.peer_addr() {
        Ok(addr) => format!("{server_name} ({addr})"),
        Err(_) => server_name.to_owned(),
    };
    let unbracketed = server_name
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(server_name);
    let name =
        ServerName::try_from(unbracketed.to_owned()).map_err(|_| TlsError::InvalidServerName {
            name: server_name.to_owned(),
        })?;
    let handshake = TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(deadline, handshake).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(source)) => Err(TlsError::Handshake { peer, source }),
        Err(_) => Err(TlsError::HandshakeTimeout { peer, deadline }),
    }
}

/// SHA-256 of a certificate's DER: the value `pin_sha256` is compared with
/// (same as `openssl x509 -noout -fingerprint -sha256`).
pub fn certificate_pin(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// Formats a pin as colon-separated uppercase hex, as openssl prints it.
pub fn format_pin(pin: &[u8; 32]) -> String {
    let mut out = String::with_capacity(32 * 3);
    for (i, b) in pin.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// Parses a SHA-256 pin: 64 hex digits, plain or as colon-separated pairs
/// ("AB:cd:…", as openssl prints fingerprints), case-insensitive.
pub fn parse_pin(input: &str) -> Result<[u8; 32]> {
    let err = |reason| TlsError::InvalidPin {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    let digits: Vec<u8> = if s.contains(':') {
        let mut out = Vec::with_capacity(64);
        for pair in s.split(':') {
            if pair.len() != 2 {
                return Err(err(
                    "colon-separated form needs exactly two hex digits per byte",
                ));
            }
            out.extend_from_slice(pair.as_bytes());
        }
        out
    } else {
        s.as_bytes().to_vec()
    };
    if digits.len() != 64 {
        return Err(err("expected 32 bytes (64 hex digits)"));
    }
    let mut pin = [0u8; 32];
    for (byte, pair) in pin.iter_mut().zip(digits.chunks(2)) {
        let hi = hex_value(pair[0]).ok_or_else(|| err("not a hex digit"))?;
        let lo = hex_value(pair[1]).ok_or_else(|| err("not a hex digit"))?;
        *byte = (hi << 4) | lo;
    }
    Ok(pin)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_pin_forms() {
        let plain = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let pin = parse_pin(plain).unwrap();
        assert_eq!(pin[0], 0x00);
        assert_eq!(pin[10], 0xaa);
        assert_eq!(pin[31], 0xff);
        let colons = format_pin(&pin);
        assert_eq!(colons.len(), 32 * 3 - 1);
        assert_eq!(parse_pin(&colons).unwrap(), pin);
        assert_eq!(parse_pin(&colons.to_lowercase()).unwrap(), pin);
        assert_eq!(parse_pin(&format!("  {plain}\n")).unwrap(), pin);
    }

    #[test]
    fn parse_pin_rejects_bad_input() {
        let plain = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        for bad in [
            "",
            &plain[..62],
            &format!("{plain}00"),
            &plain.replace('a', "g"),
            "0:01:02",
            &format!("{}:", format_pin(&[0; 32])),
            &format_pin(&[0; 32]).replacen(':', "", 1),
        ] {
            let err = parse_pin(bad).unwrap_err();
            assert!(matches!(err, TlsError::InvalidPin { .. }), "{bad:?}");
        }
    }

    #[test]
    fn pin_matches_openssl_fingerprint_definition() {
        // SHA-256("abc")
        assert_eq!(
            format_pin(&certificate_pin(b"abc")),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn no_trust_anchors_is_an_error() {
        let opts = UpstreamTlsOptions {
            use_system_roots: false,
            ..UpstreamTlsOptions::default()
        };
        assert!(matches!(
            build_client_config(&opts),
            Err(TlsError::NoTrustAnchors { .. })
        ));
        // A pin alone does not replace the chain unless insecure is set.
        let pinned = UpstreamTlsOptions {
            pin_sha256: Some([0; 32]),
            ..opts.clone()
        };
        assert!(build_client_config(&pinned).is_err());
        let insecure_pinned = UpstreamTlsOptions {
            insecure: true,
            ..pinned
        };
        let config = build_client_config(&insecure_pinned).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
