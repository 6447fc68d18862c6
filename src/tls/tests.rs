//! End-to-end tests of both legs over 127.0.0.1, and shared test helpers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::tls::ca::der_to_pem;
use crate::tls::{
    accept_with_sni, build_client_config, certificate_pin, connect, mint_leaf, CertSource,
    CertificateAuthority, CertificateSource, LeafCache, TlsError, UpstreamTlsOptions,
};

/// A unique directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("misp-guard-tls-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const DEADLINE: Duration = Duration::from_secs(5);

struct Fixture {
    _tmp: TempDir,
    cache: Arc<LeafCache>,
    /// The gateway CA's certificate, as a file for `extra_ca_pem`.
    ca_file: PathBuf,
    /// A CA the servers here do not use.
    other_ca_file: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = TempDir::new("e2e");
    let ca = CertificateAuthority::generate("e2e CA").unwrap();
    let (ca_file, _) = ca.write_new_ca(&tmp.path().join("ca")).unwrap();
    let other = CertificateAuthority::generate("other CA").unwrap();
    let (other_ca_file, _) = other.write_new_ca(&tmp.path().join("other")).unwrap();
    Fixture {
        cache: Arc::new(LeafCache::new(Arc::new(ca), 16)),
        ca_file,
        other_ca_file,
        _tmp: tmp,
    }
}

/// What the server side observed.
#[derive(Debug)]
struct Seen {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
}

/// Accepts one connection: minted leaf for the SNI (or 127.0.0.1 without
/// one), refusing names other than `allowed`; then echoes one line.
async fn spawn_server(
    cache: Arc<LeafCache>,
    allowed: &'static [&'static str],
) -> (SocketAddr, JoinHandle<Result<Seen, TlsError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let choose = move |sni: Option<String>| async move {
            let name = sni.clone().unwrap_or_else(|| "127.0.0.1".to_owned());
            if !allowed.contains(&name.as_str()) {
                return Err(TlsError::refused(sni.as_deref(), "not a configured name"));
            }
            cache.server_config_for(&name).await
        };
        let (tls, sni) = accept_with_sni(tcp, choose, DEADLINE).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        echo_line(tls).await;
        Ok(Seen { sni, alpn })
    });
    (addr, handle)
}

async fn echo_line<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let mut stream = reader.into_inner();
    stream.write_all(line.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
}

struct ClientResult {
    alpn: Option<Vec<u8>>,
    echoed: String,
    leaf: CertificateDer<'static>,
}

async fn client(
    opts: &UpstreamTlsOptions,
    addr: SocketAddr,
    name: &str,
) -> Result<ClientResult, TlsError> {
    let config = build_client_config(opts)?;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connect(config, name, tcp, DEADLINE).await?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let mut reader = BufReader::new(tls);
    reader
        .get_mut()
        .write_all(b"hello gateway\n")
        .await
        .unwrap();
    let mut echoed = String::new();
    reader.read_line(&mut echoed).await.unwrap();
    Ok(ClientResult { alpn, echoed, leaf })
}

fn trusting(ca_file: &Path) -> UpstreamTlsOptions {
    UpstreamTlsOptions {
        extra_ca_pem: Some(ca_file.to_owned()),
        pin_sha256: None,
        insecure: false,
        use_system_roots: false,
    }
}

#[tokio::test]
async fn handshake_with_minted_leaf_sni_and_alpn() {
    let f = fixture();
    let (addr, server) = spawn_server(f.cache.clone(), &["misp.test"]).await;
    let got = client(&trusting(&f.ca_file), addr, "misp.test")
        .await
        .unwrap();
    assert_eq!(got.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(got.echoed, "hello gateway\n");
    let seen = server.await.unwrap().unwrap();
    assert_eq!(seen.sni.as_deref(), Some("misp.test"));
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(f.cache.mint_count(), 1);
}

#[tokio::test]
async fn client_without_the_ca_fails_verification() {
    let f = fixture();
    let (addr, server) = spawn_server(f.cache.clone(), &["misp.test"]).await;
    let err = client(&trusting(&f.other_ca_file), addr, "misp.test")
        .await
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, TlsError::Handshake { .. }), "{msg}");
    assert!(
        msg.contains("misp.test") && msg.contains("127.0.0.1"),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("unknownissuer"), "{msg}");
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn system_roots_alone_do_not_trust_the_gateway_ca() {
    let f = fixture();
    let opts = UpstreamTlsOptions {
        use_system_roots: true,
        ..UpstreamTlsOptions::default()
    };
    // An empty system store makes the build fail; a populated one must not
    // contain our fresh CA. Either way no connection succeeds.
    if build_client_config(&opts).is_err() {
        return;
    }
    let (addr, _server) = spawn_server(f.cache.clone(), &["misp.test"]).await;
    assert!(client(&opts, addr, "misp.test").await.is_err());
}

#[tokio::test]
async fn wrong_name_fails_verification() {
    let f = fixture();
    // The server mints for what the client asks; a leaf for another name is
    // what a static certificate would present. Use the static source.
    let tmp = TempDir::new("wrong-name");
    let leaf = mint_leaf(f.cache.ca(), "other.test", &[]).unwrap();
    let cert = tmp.path().join("leaf.crt");
    let key = tmp.path().join("leaf.key");
    std::fs::write(&cert, der_to_pem("CERTIFICATE", &leaf.cert_der)).unwrap();
    std::fs::write(
        &key,
        der_to_pem("PRIVATE KEY", leaf.key_der.secret_pkcs8_der()),
    )
    .unwrap();
    let source = Arc::new(CertSource::from_pem_files(&cert, &key).unwrap());

    for (name, ok) in [("other.test", true), ("misp.test", false)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source = source.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let choose =
                |sni: Option<String>| async move { source.server_config(sni.as_deref()).await };
            let (tls, sni) = accept_with_sni(tcp, choose, DEADLINE).await?;
            echo_line(tls).await;
            Ok::<_, TlsError>(sni)
        });
        let result = client(&trusting(&f.ca_file), addr, name).await;
        assert_eq!(result.is_ok(), ok, "{name}: {:?}", result.err());
        if ok {
            assert_eq!(server.await.unwrap().unwrap().as_deref(), Some(name));
        } else {
            let msg = result.err().unwrap().to_string();
            assert!(msg.contains("not valid for name"), "{msg}");
        }
    }
}

#[tokio::test]
async fn pins_and_insecure_mode() {
    let f = fixture();
    let (addr, server) = spawn_server(f.cache.clone(), &["misp.test"]).await;
    let first = client(&trusting(&f.ca_file), addr, "misp.test")
        .await
        .unwrap();
    server.await.unwrap().unwrap();
    let pin = certificate_pin(&first.leaf);
    let mut wrong = pin;
    wrong[0] ^= 1;

    // (options, expected to connect)
    let cases = [
        (
            "chain + right pin",
            UpstreamTlsOptions {
                pin_sha256: Some(pin),
                ..trusting(&f.ca_file)
            },
            true,
        ),
        (
            "chain + wrong pin",
            UpstreamTlsOptions {
                pin_sha256: Some(wrong),
                ..trusting(&f.ca_file)
            },
            false,
        ),
        // Pin right but the chain is not trusted: both must hold.
        (
            "untrusted chain + right pin",
            UpstreamTlsOptions {
                pin_sha256: Some(pin),
                ..trusting(&f.other_ca_file)
            },
            false,
        ),
        (
            "insecure, no CA",
            UpstreamTlsOptions {
                extra_ca_pem: None,
                insecure: true,
                ..trusting(&f.ca_file)
            },
            true,
        ),
        (
            "insecure + right pin, no CA",
            UpstreamTlsOptions {
                extra_ca_pem: None,
                insecure: true,
                pin_sha256: Some(pin),
                ..trusting(&f.ca_file)
            },
            true,
        ),
        (
            "insecure + wrong pin, no CA",
            UpstreamTlsOptions {
                extra_ca_pem: None,
                insecure: true,
                pin_sha256: Some(wrong),
                ..trusting(&f.ca_file)
            },
            false,
        ),
    ];
    for (label, opts, ok) in cases {
        let (addr, server) = spawn_server(f.cache.clone(), &["misp.test"]).await;
        let result = client(&opts, addr, "misp.test").await;
        match (&result, ok) {
            (Ok(r), true) => {
                assert_eq!(r.echoed, "hello gateway\n", "{label}");
                assert_eq!(r.leaf, first.leaf, "{label}: cached leaf reused");
                server.await.unwrap().unwrap();
            }
            (Err(e), false) => {
                if label.contains("wrong pin") {
                    assert!(e.to_string().contains("does not match pin"), "{label}: {e}");
                }
            }
            _ => panic!("{label}: unexpected {:?}", result.err()),
        }
    }
    assert_eq!(f.cache.mint_count(), 1);
}

#[tokio::test]
async fn no_sni_client_gets_ip_leaf() {
    let f = fixture();
    let (addr, server) = spawn_server(f.cache.clone(), &["127.0.0.1"]).await;
    // An IP server name: rustls sends no SNI and verifies the IP SAN.
    let got = client(&trusting(&f.ca_file), addr, "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(got.echoed, "hello gateway\n");
    let seen = server.await.unwrap().unwrap();
    assert_eq!(seen.sni, None);
    assert!(f.cache.contains("127.0.0.1"));
}

#[tokio::test]
async fn unknown_names_are_refused() {
    let f = fixture();
    let (addr, server) = spawn_server(f.cache.clone(), &["misp.test"]).await;
    assert!(client(&trusting(&f.ca_file), addr, "evil.test")
        .await
        .is_err());
    match server.await.unwrap() {
        Err(TlsError::Refused { peer, sni, .. }) => {
            assert!(peer.starts_with("127.0.0.1:"), "{peer}");
            assert_eq!(sni.as_deref(), Some("evil.test"));
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(f.cache.mint_count(), 0);
}

#[tokio::test]
async fn h2_only_client_is_refused() {
    let f = fixture();
    let (addr, server) = spawn_server(f.cache.clone(), &["misp.test"]).await;
    let mut config = (*build_client_config(&trusting(&f.ca_file)).unwrap()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let result = connect(Arc::new(config), "misp.test", tcp, DEADLINE).await;
    assert!(result.is_err());
    let err = server.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("support any known protocol"), "{err}");
}

#[tokio::test]
async fn silent_client_hits_the_deadline() {
    let f = fixture();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _silent = TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let cache = f.cache.clone();
    let deadline = Duration::from_millis(200);
    let start = Instant::now();
    let result = accept_with_sni(
        tcp,
        |sni: Option<String>| async move {
            cache
                .server_config_for(sni.as_deref().unwrap_or("x.test"))
                .await
        },
        deadline,
    )
    .await;
    let elapsed = start.elapsed();
    match result {
        Err(TlsError::HandshakeTimeout { deadline: d, peer }) => {
            assert_eq!(d, deadline);
            assert!(peer.starts_with("127.0.0.1:"));
        }
        other => panic!("expected timeout, got {:?}", other.err()),
    }
    assert!(elapsed >= deadline, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test]
async fn client_connect_hits_the_deadline() {
    // A server that accepts TCP and never answers the ClientHello.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(tcp);
    });
    let opts = UpstreamTlsOptions {
        insecure: true,
        use_system_roots: false,
        ..UpstreamTlsOptions::default()
    };
    let config = build_client_config(&opts).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    let result = connect(config, "misp.test", tcp, Duration::from_millis(200)).await;
    assert!(matches!(result, Err(TlsError::HandshakeTimeout { .. })));
    assert!(start.elapsed() < Duration::from_secs(2));
    hold.abort();
}

/// Both legs resume: two connections one after the other, the client with
/// one `ClientConfig` (as the gateway keeps one per instance), the server
/// with the minted leaf's config for the name: the second handshake is a
/// resumption on both sides, for TLS 1.3 and for TLS 1.2.
#[tokio::test]
async fn second_connection_resumes_the_session_on_both_sides() {
    use rustls::HandshakeKind::{Full, Resumed};
    let f = fixture();
    let tls13 = build_client_config(&trusting(&f.ca_file)).unwrap();
    // TLS 1.2 only (OpenSSL-based MISPs may resume either way), trusting
    // the same CA.
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::tls::ca::load_certificates(&f.ca_file).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut tls12 = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls12.alpn_protocols = vec![b"http/1.1".to_vec()];
    for (version, config) in [("1.3", tls13), ("1.2", Arc::new(tls12))] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cache = f.cache.clone();
        let server = tokio::spawn(async move {
            let mut kinds = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let cache = cache.clone();
                let choose = |sni: Option<String>| async move {
                    cache.server_config_for(sni.as_deref().unwrap()).await
                };
                let (tls, _) = accept_with_sni(tcp, choose, DEADLINE).await.unwrap();
                kinds.push(tls.get_ref().1.handshake_kind());
                echo_line(tls).await;
            }
            kinds
        });
        let mut client_kinds = Vec::new();
        for _ in 0..2 {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let tls = connect(config.clone(), "misp.test", tcp, DEADLINE)
                .await
                .unwrap();
            client_kinds.push(tls.get_ref().1.handshake_kind());
            // Reading the echo also takes in the TLS 1.3 tickets.
            let mut reader = BufReader::new(tls);
            reader.get_mut().write_all(b"again\n").await.unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            assert_eq!(line, "again\n");
        }
        let server_kinds = server.await.unwrap();
        assert_eq!(
            client_kinds,
            [Some(Full), Some(Resumed)],
            "client, TLS {version}"
        );
        assert_eq!(
            server_kinds,
            [Some(Full), Some(Resumed)],
            "server, TLS {version}"
        );
    }
}
