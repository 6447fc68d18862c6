//! The gateway's certificate authority: generated once, or loaded from PEM.
//!
//! Clients of the intercepted connections must trust this CA; leaves for
//! each server name are minted from it (see `mint.rs`).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};

use crate::tls::error::{Result, TlsError};
use crate::tls::provider;

/// File names used by [`CertificateAuthority::write_new_ca`].
pub const CA_CERT_FILE: &str = "ca.crt";
/// File names used by [`CertificateAuthority::write_new_ca`].
pub const CA_KEY_FILE: &str = "ca.key";

/// Lifetime of a generated CA. Long, because replacing it means re-installing
/// it in every client's trust store.
const CA_VALIDITY_DAYS: i64 = 3650;

/// A CA able to sign leaf certificates.
pub struct CertificateAuthority {
    /// Subject DN, key-identifier method and signing key, as rcgen needs them
    /// to issue leaves whose issuer and AKI match this CA exactly.
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate first, then whatever chain was above it in the
    /// loaded file (a configured CA may be an intermediate under an
    /// organisation root: serving the chain lets clients that only trust
    /// the root build a path).
    chain: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for CertificateAuthority {
    // Never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("issuer", &self.issuer)
            .field("chain_len", &self.chain.len())
            .finish()
    }
}

impl CertificateAuthority {
    /// Generates a fresh ECDSA P-256 CA named `common_name`, valid for ten
    /// years from one day ago (backdated so clients with a slightly slow
    /// clock accept it at once).
    pub fn generate(common_name: &str) -> Result<Self> {
        let gen_err = |source| TlsError::Generate {
            subject: common_name.to_owned(),
            source,
        };
        if common_name.trim().is_empty() {
            return Err(TlsError::EmptyCommonName);
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        // pathlen 0: this CA only ever signs leaves. If its key leaks, it
        // cannot be used to create further CAs under it.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(CA_VALIDITY_DAYS);

        let cert = params.self_signed(&key).map_err(gen_err)?;
        Ok(CertificateAuthority {
            chain: vec![cert.der().clone()],
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from a PEM certificate file (the CA first, optionally
    /// followed by its own chain) and a PKCS#8 PEM key file.
    ///
    /// Checks up front what would otherwise surface as puzzling handshake
    /// failures at every client: that the certificate is a CA, allowed to
    /// sign certificates, currently valid, and that the key belongs to it.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let chain = load_certificates(cert_path)?;
        let ca_der = &chain[0];
        check_ca_certificate(cert_path, ca_der)?;

        let key_bytes = fs::read(key_path).map_err(|e| TlsError::io(key_path, e))?;
        let key_der = load_private_key(key_path, &key_bytes)?;
        // ring can only load PKCS#8; say so instead of "could not parse".
        if !matches!(key_der, PrivateKeyDer::Pkcs8(_)) {
            return Err(TlsError::bad_file(
                key_path,
                "key is PKCS#1/SEC1 ('BEGIN RSA/EC PRIVATE KEY'); a PKCS#8 key ('BEGIN PRIVATE KEY') \
                 is needed: convert it with `openssl pkcs8 -topk8 -nocrypt -in OLD -out NEW`",
            ));
        }
        check_key_matches(cert_path, key_path, ca_der, &key_der)?;
        let key = KeyPair::try_from(&key_der).map_err(|e| {
            TlsError::bad_file(key_path, format!("unsupported or invalid private key: {e}"))
        })?;

        let issuer = Issuer::from_ca_cert_der(ca_der, key)
            .map_err(|e| TlsError::bad_file(cert_path, format!("cannot use as issuer: {e}")))?;
        // An empty list means the certificate has no keyUsage extension,
        // which permits everything.
        let usages = issuer.key_usages();
        if !usages.is_empty() && !usages.contains(&KeyUsagePurpose::KeyCertSign) {
            return Err(TlsError::bad_file(
                cert_path,
                "CA certificate's keyUsage lacks keyCertSign: clients would reject every leaf",
            ));
        }
        Ok(CertificateAuthority { issuer, chain })
    }

    /// The CA certificate (and any chain loaded with it) as PEM: what an
    /// operator installs in the clients' trust stores.
    pub fn cert_pem(&self) -> String {
        self.chain
            .iter()
            .map(|c| der_to_pem("CERTIFICATE", c))
            .collect()
    }

    /// The CA's private key as PKCS#8 PEM. Secret: handle with care.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The CA certificate followed by the chain loaded above it. Served after
    /// each minted leaf.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Writes this CA to `dir/ca.crt` and `dir/ca.key` and returns both
    /// paths. Creates `dir` (mode 0700) if missing.
    ///
    /// Refuses to overwrite either file: silently replacing a CA would break
    /// every client that trusts the old one, and replacing only one of the
    /// pair would leave a key that does not match its certificate.
    ///
    /// The key file is created with mode 0600 by `open(2)` itself, so it is
    /// never world-readable, not even between creation and a later chmod.
    pub fn write_new_ca(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| TlsError::io(dir, e))?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        // Check both first so that neither file is touched when one exists.
        for path in [&cert_path, &key_path] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(TlsError::AlreadyExists { path: path.clone() });
            }
        }

        // Key first: if it cannot be created, no orphan certificate is left.
        // On any later failure remove what *we* created (create_new
        // guarantees these are ours), so a retry does not hit AlreadyExists.
        let mut key_file = create_new(&key_path, 0o600)?;
        let mut cert_file = match create_new(&cert_path, 0o644) {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_file(&key_path);
                return Err(e);
            }
        };
        let written = write_all_synced(&mut key_file, &key_path, self.key_pem().as_bytes())
            .and_then(|()| {
                write_all_synced(&mut cert_file, &cert_path, self.cert_pem().as_bytes())
            });
        if let Err(e) = written {
            let _ = fs::remove_file(&key_path);
            let _ = fs::remove_file(&cert_path);
            return Err(e);
        }
        Ok((cert_path, key_path))
    }
}

/// `O_CREAT|O_EXCL` with the final mode: no race with another writer, no
/// window with looser permissions (the umask can only narrow `mode`).
fn create_new(path: &Path, mode: u32) -> Result<fs::File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => TlsError::AlreadyExists {
                path: path.to_owned(),
            },
            _ => TlsError::io(path, e),
        })
}

fn write_all_synced(file: &mut fs::File, path: &Path, data: &[u8]) -> Result<()> {
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| TlsError::io(path, e))
}

/// Parses the first private key in a PEM file, with errors naming the file
/// but never echoing its content.
pub(crate) fn load_private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::bad_file(
            path,
            "no private key found (expected 'BEGIN PRIVATE KEY', or an RSA/EC key)",
        ),
        _ => TlsError::bad_file(path, "private key is not valid PEM"),
    })
}

/// Loads all certificates of a PEM file; at least one is required.
pub(crate) fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = fs::read(path).map_err(|e| TlsError::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::bad_file(path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::bad_file(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

fn check_ca_certificate(path: &Path, der: &CertificateDer<'_>) -> Result<()> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::bad_file(path, format!("first certificate does not parse: {e}")))?;
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(TlsError::bad_file(
            path,
            "first certificate is not a CA (basicConstraints CA:TRUE missing): clients would reject every leaf",
        ));
    }
    if !cert.validity().is_valid() {
        return Err(TlsError::bad_file(
            path,
            format!(
                "CA certificate is not valid now (valid {} to {})",
                cert.validity().not_before,
                cert.validity().not_after
            ),
        ));
    }
    Ok(())
}

fn check_key_matches(
    cert_path: &Path,
    key_path: &Path,
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
) -> Result<()> {
    let signer = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::bad_file(key_path, format!("unusable private key: {e}")))?;
    match CertifiedKey::new(vec![cert.clone()], signer).keys_match() {
        Ok(()) => Ok(()),
        // The provider cannot tell for this key type: nothing to report.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(_) => Err(TlsError::bad_file(
            key_path,
            format!(
                "private key does not belong to the certificate in {}",
                cert_path.display()
            ),
        )),
    }
}

/// Warns when the CA key file's permissions are unsafe for the user this
/// process runs as (see [`key_file_mode_problem`]); `run` calls it when it
/// loads the CA (`check-config` reports the same rule for the service user).
pub fn warn_if_key_file_unsafe(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        if let Some(problem) = key_file_mode_problem(meta.mode(), meta.gid(), &process_groups()) {
            tracing::warn!(path = %path.display(), "CA key file: {problem}");
        }
    }
}

/// The groups this process has (effective and supplementary).
pub fn process_groups() -> Vec<u32> {
    let mut gids = vec![nix::unistd::getegid().as_raw()];
    if let Ok(more) = nix::unistd::getgroups() {
        gids.extend(more.into_iter().map(|g| g.as_raw()));
    }
    gids
}

/// Why a CA key file with `mode`, owned by group `file_gid`, is unsafe for
/// a gateway whose user is in `reader_gids`, if it is. The package installs
/// the key 0640 root:misp-guard-gw (the service reads it through its group,
/// nobody can change it); `misp-guard-gw ca` writes 0600. Both are fine.
/// Anything writable by group or others, readable by others, or readable
/// by a group the gateway's user is not in (other people then) is not.
pub fn key_file_mode_problem(mode: u32, file_gid: u32, reader_gids: &[u32]) -> Option<String> {
    let perms = mode & 0o777;
    const FIX: &str = "chmod 0640 with the service's group (chgrp misp-guard-gw), or chmod 0600";
    if perms & 0o022 != 0 {
        return Some(format!(
            "mode {perms:04o} lets group or others change the key; {FIX}"
        ));
    }
    if perms & 0o004 != 0 {
        return Some(format!(
            "mode {perms:04o} lets everyone read the key; {FIX}"
        ));
    }
    if perms & 0o040 != 0 && !reader_gids.contains(&file_gid) {
        return Some(format!(
            "mode {perms:04o} lets group {file_gid} read the key, a group the gateway's user is not in; {FIX}"
        ));
    }
    None
}

/// PEM-encodes one DER object (RFC 7468: base64, 64 columns).
pub fn der_to_pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(ALPHABET[((v >> (18 - 6 * i)) & 0x3f) as usize]);
            } else {
                b64.push(b'=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        // The alphabet is ASCII, so this cannot fail.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_file_modes_agree_with_the_package() {
        let service = 996;
        // What `ca` writes and what the package sets: fine.
        assert_eq!(key_file_mode_problem(0o100600, 0, &[service]), None);
        assert_eq!(key_file_mode_problem(0o100640, service, &[service]), None);
        assert_eq!(key_file_mode_problem(0o100400, 0, &[]), None);
        // Readable through a group the gateway is not in.
        assert!(key_file_mode_problem(0o100640, 4, &[service])
            .unwrap()
            .contains("group 4"));
        // World-readable or writable by anyone else.
        for mode in [0o100644, 0o100604, 0o100660, 0o100602, 0o100620] {
            assert!(
                key_file_mode_problem(mode, service, &[service]).is_some(),
                "{mode:o}"
            );
        }
    }

    use super::*;
    use crate::tls::tests::TempDir;

    #[test]
    fn generated_ca_has_ca_properties() {
        let ca = CertificateAuthority::generate("misp-guard test CA").unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(!ku.digital_signature());
        // ECDSA P-256 (id-ecPublicKey + prime256v1).
        let spki = &cert.tbs_certificate.subject_pki;
        assert_eq!(spki.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let nb = cert.validity().not_before.timestamp();
        let na = cert.validity().not_after.timestamp();
        assert!((now - 86_400 - nb).abs() < 120, "backdated one day");
        assert!((na - (now + 3650 * 86_400)).abs() < 120, "ten years");
        assert!(cert.subject().to_string().contains("misp-guard test CA"));
        assert!(cert.extensions().iter().any(|e| matches!(
            e.parsed_extension(),
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(_)
        )));
    }

    #[test]
    fn empty_common_name_is_refused() {
        assert!(matches!(
            CertificateAuthority::generate("  "),
            Err(TlsError::EmptyCommonName)
        ));
    }

    #[test]
    fn write_reload_and_refuse_overwrite() {
        let tmp = TempDir::new("ca-write");
        let dir = tmp.path().join("nested");
        let ca = CertificateAuthority::generate("write test").unwrap();
        let (cert_path, key_path) = ca.write_new_ca(&dir).unwrap();
        assert_eq!(cert_path, dir.join("ca.crt"));
        assert_eq!(key_path, dir.join("ca.key"));
        let key_mode = fs::metadata(&key_path).unwrap().mode() & 0o777;
        assert_eq!(key_mode, 0o600);
        let dir_mode = fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(dir_mode & 0o077, 0, "created directory is private");

        let loaded = CertificateAuthority::from_pem_files(&cert_path, &key_path).unwrap();
        assert_eq!(loaded.cert_der(), ca.cert_der());
        assert_eq!(loaded.key_pem(), ca.key_pem());
        assert_eq!(loaded.cert_pem(), ca.cert_pem());

        let before = fs::read(&key_path).unwrap();
        let other = CertificateAuthority::generate("other").unwrap();
        match other.write_new_ca(&dir) {
            Err(TlsError::AlreadyExists { path }) => assert_eq!(path, cert_path),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert_eq!(fs::read(&key_path).unwrap(), before, "key untouched");

        // Only the key present: still refused, and no certificate appears.
        fs::remove_file(&cert_path).unwrap();
        let err = other.write_new_ca(&dir).unwrap_err();
        assert!(err.to_string().contains("ca.key"), "{err}");
        assert!(!cert_path.exists());
        assert_eq!(fs::read(&key_path).unwrap(), before);
    }

    #[test]
    fn load_errors_name_the_file() {
        let tmp = TempDir::new("ca-errors");
        let missing = tmp.path().join("missing.crt");
        let err = CertificateAuthority::from_pem_files(&missing, &missing).unwrap_err();
        assert!(err.to_string().contains("missing.crt"), "{err}");

        let garbage = tmp.path().join("garbage.crt");
        fs::write(&garbage, "hello").unwrap();
        let err = CertificateAuthority::from_pem_files(&garbage, &garbage).unwrap_err();
        assert!(
            err.to_string().contains("garbage.crt") && err.to_string().contains("no CERTIFICATE"),
            "{err}"
        );

        // A key that belongs to another CA.
        let a = CertificateAuthority::generate("a").unwrap();
        let b = CertificateAuthority::generate("b").unwrap();
        let (a_cert, _) = a.write_new_ca(&tmp.path().join("a")).unwrap();
        let (_, b_key) = b.write_new_ca(&tmp.path().join("b")).unwrap();
        let err = CertificateAuthority::from_pem_files(&a_cert, &b_key).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("does not belong") && msg.contains("b/ca.key"),
            "{msg}"
        );

        // A leaf is not a CA.
        let leaf = crate::tls::mint_leaf(&a, "leaf.test", &[]).unwrap();
        let leaf_cert = tmp.path().join("leaf.crt");
        let leaf_key = tmp.path().join("leaf.key");
        fs::write(&leaf_cert, der_to_pem("CERTIFICATE", &leaf.cert_der)).unwrap();
        fs::write(
            &leaf_key,
            der_to_pem("PRIVATE KEY", leaf.key_der.secret_pkcs8_der()),
        )
        .unwrap();
        let err = CertificateAuthority::from_pem_files(&leaf_cert, &leaf_key).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
    }

    #[test]
    fn pem_encoding_round_trips_all_lengths() {
        // Exercise every padding case of the base64 encoder.
        for len in 1..200usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let pem = der_to_pem("CERTIFICATE", &data);
            let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(back.as_ref(), &data[..], "len {len}");
        }
    }
}
