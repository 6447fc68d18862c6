//! Leaf certificates minted on the fly per server name, and a bounded cache
//! of the finished rustls configurations.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use time::OffsetDateTime;
use tokio::sync::OnceCell;

use crate::tls::ca::CertificateAuthority;
use crate::tls::error::{Result, TlsError};
use crate::tls::server_config::build_server_config;

/// Leaves are backdated by this much, for clients whose clock lags.
const LEAF_BACKDATE: time::Duration = time::Duration::days(1);
/// Leaf lifetime. Short, since minting is cheap and nobody revokes them.
const LEAF_VALIDITY: time::Duration = time::Duration::days(30);
/// A cached leaf is re-minted after this long, well before it expires: a
/// gateway that runs for months must not keep serving a dead certificate.
const LEAF_REFRESH_AFTER: std::time::Duration = std::time::Duration::from_secs(20 * 24 * 3600);
/// RFC 5280 upper bound for a commonName.
const MAX_CN_LEN: usize = 64;

/// A freshly minted leaf: certificate and its private key.
pub struct MintedLeaf {
    /// The leaf certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// Its private key (P-256, PKCS#8).
    pub key_der: PrivatePkcs8KeyDer<'static>,
}

/// A normalised certificate subject: what the SAN will say.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Dns(String),
    Ip(IpAddr),
}

/// Lowercases and validates `name`. An IP literal (also `[v6]`) becomes an
/// IP subject; anything else must be a syntactically valid DNS name.
fn parse_subject(name: &str) -> Result<Subject> {
    let trimmed = name.trim();
    let unbracketed = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(trimmed);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(Subject::Ip(ip));
    }
    // DNS is case-insensitive and the trailing root dot is not part of the
    // name a certificate carries; normalising also keeps the cache from
    // holding "Example.org" and "example.org." twice.
    let dns = trimmed.trim_end_matches('.').to_ascii_lowercase();
    if dns.is_empty() || DnsName::try_from(dns.as_str()).is_err() {
        return Err(TlsError::InvalidServerName {
            name: name.to_owned(),
        });
    }
    Ok(Subject::Dns(dns))
}

impl Subject {
    fn key(&self) -> String {
        match self {
            Subject::Dns(d) => d.clone(),
            Subject::Ip(ip) => ip.to_string(),
        }
    }
}

/// Mints a leaf for `name` signed by `ca`: SAN = the DNS name or IP address
/// `name` denotes, plus `extra_ips` (so that a client which connects by IP
/// and sends no SNI still gets a matching certificate); EKU serverAuth; an
/// authority key identifier; a fresh P-256 key.
pub fn mint_leaf(
    ca: &CertificateAuthority,
    name: &str,
    extra_ips: &[IpAddr],
) -> Result<MintedLeaf> {
    let subject = parse_subject(name)?;
    mint_subject(ca, &subject, extra_ips)
}

fn mint_subject(
    ca: &CertificateAuthority,
    subject: &Subject,
    extra_ips: &[IpAddr],
) -> Result<MintedLeaf> {
    let label = subject.key();
    let gen_err = |source| TlsError::Generate {
        subject: label.clone(),
        source,
    };

    let mut sans = Vec::with_capacity(1 + extra_ips.len());
    match subject {
        Subject::Dns(d) => sans.push(SanType::DnsName(d.clone().try_into().map_err(gen_err)?)),
        Subject::Ip(ip) => sans.push(SanType::IpAddress(*ip)),
    }
    for ip in extra_ips {
        let san = SanType::IpAddress(*ip);
        if !sans.contains(&san) {
            sans.push(san);
        }
    }

    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    let mut dn = DistinguishedName::new();
    // Clients match on the SAN only; the CN is for humans reading the
    // certificate, and is left out where RFC 5280 would not allow it.
    if label.len() <= MAX_CN_LEN {
        dn.push(DnType::CommonName, label.as_str());
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Off by default in rcgen; Python >= 3.13 (VERIFY_X509_STRICT) and
    // other strict verifiers reject leaves without an AKI.
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - LEAF_BACKDATE;
    params.not_after = now + LEAF_VALIDITY;
    // No serial given: rcgen derives it from the (fresh) public key, so two
    // leaves for one name never share issuer+serial (Firefox rejects that).

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let cert = params.signed_by(&key, ca.issuer()).map_err(gen_err)?;
    Ok(MintedLeaf {
        cert_der: cert.der().clone(),
        key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
    })
}

/// One cache slot. The `OnceCell` is what coalesces concurrent misses: all
/// callers for a name share the cell, the first runs the mint, the others
/// wait for its result. If the minting caller is cancelled (handshake
/// deadline), tokio lets one of the waiters take over.
type Slot = Arc<OnceCell<Leaf>>;

#[derive(Clone)]
struct Leaf {
    config: Arc<ServerConfig>,
    minted_at: Instant,
}

struct Entry {
    slot: Slot,
    /// Position in `CacheState::order`; larger = used more recently.
    tick: u64,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<String, Entry>,
    /// tick -> name, oldest first: O(log n) least-recently-used eviction.
    order: BTreeMap<u64, String>,
    clock: u64,
}

impl CacheState {
    fn touch(&mut self, name: &str) {
        self.clock += 1;
        let now = self.clock;
        if let Some(entry) = self.entries.get_mut(name) {
            self.order.remove(&entry.tick);
            entry.tick = now;
            self.order.insert(now, name.to_owned());
        }
    }

    fn insert(&mut self, name: &str, slot: Slot, capacity: usize) {
        self.remove(name);
        while self.entries.len() >= capacity {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            // Callers already waiting on the victim's slot hold their own
            // Arc, so eviction never strands them.
            self.entries.remove(&victim);
        }
        self.clock += 1;
        let tick = self.clock;
        self.order.insert(tick, name.to_owned());
        self.entries.insert(name.to_owned(), Entry { slot, tick });
    }

    fn remove(&mut self, name: &str) {
        if let Some(old) = self.entries.remove(name) {
            self.order.remove(&old.tick);
        }
    }
}

/// Bounded cache of minted `ServerConfig`s, one per server name.
///
/// Bounded because names come from client SNI: unbounded, a client could
/// make the gateway mint and keep a certificate per random name.
pub struct LeafCache {
    ca: Arc<CertificateAuthority>,
    /// Normalised DNS name → the addresses its leaf also carries.
    host_ips: HashMap<String, Vec<IpAddr>>,
    capacity: usize,
    refresh_after: std::time::Duration,
    state: Mutex<CacheState>,
    mints: AtomicU64,
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("host_ips", &self.host_ips)
            .field("mints", &self.mint_count())
            .finish()
    }
}

impl LeafCache {
    /// Default number of names kept.
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// A cache minting from `ca`, holding at most `capacity` names (at least 1).
    pub fn new(ca: Arc<CertificateAuthority>, capacity: usize) -> Self {
        LeafCache {
            ca,
            host_ips: HashMap::new(),
            capacity: capacity.max(1),
            refresh_after: LEAF_REFRESH_AFTER,
            state: Mutex::new(CacheState::default()),
            mints: AtomicU64::new(0),
        }
    }

    /// The address of each MISP instance by its host name: a leaf minted for
    /// that name also carries that address (and no other), so a MISP that
    /// is configured with the server's IP and sends no SNI still verifies.
    pub fn with_host_ips<'a>(mut self, hosts: impl IntoIterator<Item = (&'a str, IpAddr)>) -> Self {
        for (host, ip) in hosts {
            if let Ok(Subject::Dns(name)) = parse_subject(host) {
                let ips = self.host_ips.entry(name).or_default();
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        self
    }

    /// The extra IP SANs of `subject`'s leaf.
    fn ips_for(&self, subject: &Subject) -> &[IpAddr] {
        match subject {
            Subject::Dns(name) => self.host_ips.get(name).map_or(&[], Vec::as_slice),
            Subject::Ip(_) => &[],
        }
    }

    /// The CA leaves are minted from.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// How many leaves were minted so far (cache misses that did the work).
    pub fn mint_count(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// Number of names currently cached (including mints in progress).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `name` is cached (after normalisation).
    pub fn contains(&self, name: &str) -> bool {
        parse_subject(name).is_ok_and(|s| self.lock().entries.contains_key(&s.key()))
    }

    /// The `ServerConfig` presenting a leaf for `name` (a DNS name or an IP
    /// literal), minted on first use. Concurrent first uses mint once.
    pub async fn server_config_for(&self, name: &str) -> Result<Arc<ServerConfig>> {
        let subject = parse_subject(name)?;
        let key = subject.key();
        let slot = self.slot_for(&key);
        let result = slot
            .get_or_try_init(|| async {
                // Minting inline: a P-256 keygen plus one signature is tens
                // of microseconds, less than handing it to a blocking thread
                // would cost, and cancellation stays trivial.
                let leaf = mint_subject(&self.ca, &subject, self.ips_for(&subject))?;
                self.mints.fetch_add(1, Ordering::Relaxed);
                let mut chain = Vec::with_capacity(1 + self.ca.chain().len());
                chain.push(leaf.cert_der);
                // Serving the CA (and its chain) too lets clients that only
                // trust a root above a configured intermediate CA verify.
                chain.extend(self.ca.chain().iter().cloned());
                let config = build_server_config(chain, PrivateKeyDer::Pkcs8(leaf.key_der))?;
                Ok::<_, TlsError>(Leaf {
                    config,
                    minted_at: Instant::now(),
                })
            })
            .await
            .map(|leaf| leaf.config.clone());
        if result.is_err() {
            // Do not keep a slot for a name that cannot be minted; the next
            // request retries from scratch.
            let mut state = self.lock();
            if state
                .entries
                .get(&key)
                .is_some_and(|e| Arc::ptr_eq(&e.slot, &slot))
            {
                state.remove(&key);
            }
        }
        result
    }

    /// Finds the slot for `key` (marking it recently used) or inserts an
    /// empty one, evicting the least recently used name when full.
    fn slot_for(&self, key: &str) -> Slot {
        let mut state = self.lock();
        if let Some(entry) = state.entries.get(key) {
            let stale = entry
                .slot
                .get()
                .is_some_and(|leaf| leaf.minted_at.elapsed() >= self.refresh_after);
            if !stale {
                let slot = entry.slot.clone();
                state.touch(key);
                return slot;
            }
        }
        let slot = Slot::default();
        state.insert(key, slot.clone(), self.capacity);
        slot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // No code path panics while holding the lock; if one ever did, the
        // maps are still consistent enough to keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::*;

    fn ca() -> Arc<CertificateAuthority> {
        Arc::new(CertificateAuthority::generate("mint test CA").unwrap())
    }

    struct Sans {
        dns: Vec<String>,
        ips: Vec<IpAddr>,
    }

    fn sans(cert: &X509Certificate<'_>) -> Sans {
        let mut out = Sans {
            dns: vec![],
            ips: vec![],
        };
        for name in &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
        {
            match name {
                GeneralName::DNSName(d) => out.dns.push(d.to_string()),
                GeneralName::IPAddress(b) => out.ips.push(match b.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()),
                    16 => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()),
                    n => panic!("bad IP SAN length {n}"),
                }),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        out
    }

    #[test]
    fn leaf_has_san_eku_aki_issuer_and_validity() {
        let ca = ca();
        let extra = [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))];
        let leaf = mint_leaf(&ca, "MISP.Example.org.", &extra).unwrap();
        let (_, cert) = parse_x509_certificate(&leaf.cert_der).unwrap();
        let (_, ca_cert) = parse_x509_certificate(ca.cert_der()).unwrap();

        let s = sans(&cert);
        assert_eq!(s.dns, vec!["misp.example.org".to_owned()]);
        assert_eq!(s.ips, extra.to_vec());

        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth);
        assert!(!eku.client_auth);

        let aki = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => Some(aki.clone()),
                _ => None,
            })
            .expect("AKI present");
        let ca_ski = ca_cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0.to_vec()),
                _ => None,
            })
            .expect("CA has SKI");
        assert_eq!(aki.key_identifier.unwrap().0.to_vec(), ca_ski);

        assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
        assert!(!cert.is_ca());

        let now = OffsetDateTime::now_utc().unix_timestamp();
        let nb = cert.validity().not_before.timestamp();
        let na = cert.validity().not_after.timestamp();
        assert!((now - 86_400 - nb).abs() < 120, "not_before = now - 1 day");
        assert!(
            (na - (now + 30 * 86_400)).abs() < 120,
            "not_after = now + 30 days"
        );

        // The signature really is the CA's.
        assert!(cert
            .verify_signature(Some(&ca_cert.tbs_certificate.subject_pki))
            .is_ok());
    }

    #[test]
    fn ip_names_become_ip_sans() {
        let ca = ca();
        let leaf = mint_leaf(&ca, "127.0.0.1", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap();
        let (_, cert) = parse_x509_certificate(&leaf.cert_der).unwrap();
        let s = sans(&cert);
        assert!(s.dns.is_empty());
        assert_eq!(s.ips, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)], "deduplicated");

        let leaf = mint_leaf(&ca, "[::1]", &[]).unwrap();
        let (_, cert) = parse_x509_certificate(&leaf.cert_der).unwrap();
        assert_eq!(sans(&cert).ips, vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    }

    #[test]
    fn leaves_get_fresh_keys_and_serials() {
        let ca = ca();
        let a = mint_leaf(&ca, "a.test", &[]).unwrap();
        let b = mint_leaf(&ca, "a.test", &[]).unwrap();
        assert_ne!(a.key_der.secret_pkcs8_der(), b.key_der.secret_pkcs8_der());
        let (_, ca_) = parse_x509_certificate(&a.cert_der).unwrap();
        let (_, cb) = parse_x509_certificate(&b.cert_der).unwrap();
        assert_ne!(ca_.raw_serial(), cb.raw_serial());
    }

    #[test]
    fn long_names_skip_the_common_name() {
        let ca = ca();
        let long = format!("{}.example.org", "a".repeat(60));
        let leaf = mint_leaf(&ca, &long, &[]).unwrap();
        let (_, cert) = parse_x509_certificate(&leaf.cert_der).unwrap();
        assert_eq!(cert.subject().iter_common_name().count(), 0);
        assert_eq!(sans(&cert).dns, vec![long]);
    }

    #[test]
    fn invalid_names_are_refused() {
        let ca = ca();
        for bad in ["", "bad name", "exa mple.org", "-.", "a..b", "ünicode.test"] {
            assert!(
                matches!(
                    mint_leaf(&ca, bad, &[]),
                    Err(TlsError::InvalidServerName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_mint_once() {
        let cache = Arc::new(LeafCache::new(ca(), LeafCache::DEFAULT_CAPACITY));
        let barrier = Arc::new(tokio::sync::Barrier::new(50));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    cache.server_config_for("one.test").await.unwrap()
                })
            })
            .collect();
        let mut configs = Vec::new();
        for t in tasks {
            configs.push(t.await.unwrap());
        }
        assert_eq!(cache.mint_count(), 1);
        assert!(configs.iter().all(|c| Arc::ptr_eq(c, &configs[0])));
        // Case and trailing dot map to the same entry.
        let again = cache.server_config_for("ONE.test.").await.unwrap();
        assert!(Arc::ptr_eq(&again, &configs[0]));
        assert_eq!(cache.mint_count(), 1);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn capacity_evicts_least_recently_used() {
        let cache = LeafCache::new(ca(), 2);
        cache.server_config_for("a.test").await.unwrap();
        cache.server_config_for("b.test").await.unwrap();
        // Touch a, so b is now the least recently used.
        cache.server_config_for("a.test").await.unwrap();
        assert_eq!(cache.mint_count(), 2);
        cache.server_config_for("c.test").await.unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.contains("a.test"));
        assert!(!cache.contains("b.test"));
        assert!(cache.contains("c.test"));
        // b must be minted again.
        cache.server_config_for("b.test").await.unwrap();
        assert_eq!(cache.mint_count(), 4);
        assert!(!cache.contains("a.test"));
    }

    #[tokio::test]
    async fn stale_leaves_are_reminted() {
        let mut cache = LeafCache::new(ca(), 4);
        cache.refresh_after = std::time::Duration::ZERO;
        let first = cache.server_config_for("x.test").await.unwrap();
        let second = cache.server_config_for("x.test").await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(cache.mint_count(), 2);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn leaves_carry_only_their_own_instance_address() {
        let (a, b) = (
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)),
        );
        let cache =
            LeafCache::new(ca(), 4).with_host_ips([("MISP.a.test.", a), ("misp.b.test", b)]);
        let ips = |name| cache.ips_for(&parse_subject(name).unwrap()).to_vec();
        assert_eq!(ips("misp.a.test"), vec![a]);
        assert_eq!(ips("misp.b.test"), vec![b]);
        assert_eq!(ips("allowlisted.test"), Vec::<IpAddr>::new());
        assert_eq!(ips("192.0.2.10"), Vec::<IpAddr>::new());
    }

    #[tokio::test]
    async fn invalid_names_are_not_cached() {
        let cache = LeafCache::new(ca(), 4);
        assert!(cache.server_config_for("bad name").await.is_err());
        assert!(cache.is_empty());
        assert_eq!(cache.mint_count(), 0);
    }
}
