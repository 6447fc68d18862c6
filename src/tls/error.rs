//! The one error type of the TLS layer.
//!
//! Every variant names what it is about — a file path, a server name or a
//! peer — because these errors end up in operator logs, where "invalid
//! certificate" without saying *which* is useless.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Result alias for the TLS layer.
pub type Result<T, E = TlsError> = std::result::Result<T, E>;

/// Errors of the TLS layer.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// `write_new_ca` found a file where it wanted to create one.
    #[error("{}: already exists, refusing to overwrite (move it away or point the configuration at it)", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },

    /// A PEM file did not hold what it should, or its content is unusable.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// rcgen failed to build a certificate (CA or leaf).
    #[error("generating certificate for {subject:?}: {source}")]
    Generate {
        /// The common name / server name the certificate was for.
        subject: String,
        /// The underlying error.
        source: rcgen::Error,
    },

    /// A CA needs a name clients can show to their users.
    #[error("CA common name must not be empty")]
    EmptyCommonName,

    /// rustls refused a configuration (certificate/key or protocol set).
    #[error("building TLS configuration for {what}: {source}")]
    Config {
        /// What the configuration was for (a name or a file).
        what: String,
        /// The underlying error.
        source: rustls::Error,
    },

    /// No trust anchors at all for upstream verification.
    #[error("upstream TLS: no trust anchors (system store {system}, no extra CA file); configure extra_ca_pem or a pin")]
    NoTrustAnchors {
        /// Why the system store gave nothing.
        system: &'static str,
    },

    /// A name that is neither a valid DNS name nor an IP address.
    #[error("invalid server name {name:?}")]
    InvalidServerName {
        /// The offending name.
        name: String,
    },

    /// A certificate pin that is not 32 bytes of hex.
    #[error("invalid SHA-256 pin {input:?}: {reason}")]
    InvalidPin {
        /// The input as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The certificate chooser refused the client (unknown SNI, …).
    #[error("TLS client {peer}: refused (SNI {sni:?}): {reason}")]
    Refused {
        /// The peer (address) concerned.
        peer: String,
        /// The SNI it sent, if any.
        sni: Option<String>,
        /// Why it was refused.
        reason: String,
    },

    /// A handshake failed (I/O or TLS alert).
    #[error("TLS handshake with {peer}: {source}")]
    Handshake {
        /// The peer concerned (address, or server name and address).
        peer: String,
        /// The underlying error; rustls errors arrive wrapped in io::Error.
        source: io::Error,
    },

    /// A handshake did not finish within its deadline.
    #[error("TLS handshake with {peer}: no completion within {deadline:?}")]
    HandshakeTimeout {
        /// The peer concerned.
        peer: String,
        /// The deadline that ran out.
        deadline: Duration,
    },
}

impl TlsError {
    /// Shorthand for the `Refused` variant, for `choose` callbacks that turn
    /// a client away. The peer is filled in by `accept_with_sni`.
    pub fn refused(sni: Option<&str>, reason: impl Into<String>) -> Self {
        TlsError::Refused {
            peer: String::new(),
            sni: sni.map(str::to_owned),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        TlsError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        TlsError::BadFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
