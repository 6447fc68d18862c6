//! The compiled policy: the config turned once into lookup structures that the
//! engine reads on every request without parsing or allocating.

pub mod caseless;
pub mod endpoints;
pub mod gateway;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

pub use caseless::CaselessSet;
pub use endpoints::{Endpoint, EndpointTable, RequestBody, ResponseBody};
pub use gateway::{
    GatewaySettings, InstanceGateway, ListenMode, Listener, LogLevel, Mode, Timeouts, TlsSettings,
    TproxyRouting,
};

use crate::vocab::{AllowedUrl, Scheme};

/// Index of an instance in [`Policy::instances`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId(pub u16);

/// Index of a compartment in [`Policy::compartments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompartmentId(pub u16);

#[derive(Debug)]
pub struct Policy {
    pub instances: Vec<Instance>,
    pub compartments: Vec<String>,
    /// `reach[src][dst]`: may compartment `src` reach `dst`?
    pub(crate) reach: Vec<Vec<bool>>,
    pub(crate) by_ip: HashMap<IpAddr, InstanceId>,
    /// Lower-cased host name → instance.
    pub(crate) by_host: HashMap<String, InstanceId>,
    pub(crate) allow_domains: HashSet<String>,
    pub(crate) allow_urls: Vec<AllowedUrl>,
    pub(crate) endpoints: EndpointTable,
    pub limits: Limits,
    pub gateway: GatewaySettings,
    /// Things that are legal but probably not what the operator meant.
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub struct Instance {
    pub id: String,
    pub ip: IpAddr,
    pub host: String,
    pub port: u16,
    pub compartment: CompartmentId,
    pub rules: Rules,
}

/// The content rules of one instance (POLICY.md §3).
#[derive(Debug, Default)]
pub struct Rules {
    pub blocked_tags: CaselessSet,
    pub required_taxonomies: Vec<RequiredTaxonomy>,
    /// Indexed by distribution level 0..=5.
    pub blocked_distribution: [bool; 6],
    pub blocked_sharing_groups: CaselessSet,
    pub blocked_attribute_types: CaselessSet,
    pub blocked_attribute_categories: CaselessSet,
    pub blocked_object_types: CaselessSet,
}

#[derive(Debug)]
pub struct RequiredTaxonomy {
    /// As configured; appears in block reasons.
    pub name: String,
    /// Folded `"<name>:"`.
    pub prefix: String,
    /// When non-empty, the tag must also be one of these.
    pub allowed: CaselessSet,
}

/// Size limits for bodies the engine must read. Defaults are generous: MISP
/// events of hundreds of MB (decompressed) exist in the wild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body on the wire (after transfer decoding) that is buffered
    /// for inspection.
    pub max_body_bytes: u64,
    /// Largest body after Content-Encoding decoding.
    pub max_decoded_body_bytes: u64,
    /// Decompression-bomb guard: decoded/wire ratio above which decoding
    /// stops, applied once the decoded size passes the floor below.
    pub max_decompression_ratio: u64,
    pub decompression_ratio_floor_bytes: u64,
    /// Client connections open at once, all listeners together; more are
    /// closed on accept (`proxy::admission`). Each one holds up to two
    /// descriptors (client and upstream), far below the unit's
    /// `LimitNOFILE=65536`.
    pub max_connections: u64,
    /// The same per client address, so one peer cannot take them all.
    pub max_connections_per_client: u64,
    /// Body bytes buffered for inspection at once, all exchanges together
    /// (`proxy::buffer_budget`); a body that does not fit is answered 503.
    /// Never below `max_body_bytes`, so any allowed body can be buffered
    /// when the gateway is otherwise idle.
    pub max_buffered_bytes: u64,
    /// Header fields in one request or response head: a request over it is
    /// answered 431, a response 502.
    pub max_header_count: u64,
    /// Bytes of one head, up to its blank line (the same answers). Heads
    /// are held before any budget applies: at most this per connection.
    pub max_header_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 512 << 20,
            max_decoded_body_bytes: 1 << 30,
            max_decompression_ratio: 200,
            decompression_ratio_floor_bytes: 16 << 20,
            max_connections: 4096,
            max_connections_per_client: 512,
            max_buffered_bytes: 512 << 20,
            max_header_count: 100,
            max_header_bytes: 64 << 10,
        }
    }
}

impl Policy {
    pub fn instance(&self, id: InstanceId) -> &Instance {
        &self.instances[id.0 as usize]
    }

    /// The instance whose `ip` is `ip` (IPv4-mapped IPv6 must already be
    /// folded, see `vocab::unmap`).
    pub fn instance_by_ip(&self, ip: IpAddr) -> Option<InstanceId> {
        self.by_ip.get(&ip).copied()
    }

    /// The instance named by `host`: its host name (any case) or its IP
    /// literal, as misp-guard's host mapping does.
    pub fn instance_by_host(&self, host: &str) -> Option<InstanceId> {
        if let Some(ip) = crate::vocab::parse_ip(host.trim_start_matches('[').trim_end_matches(']'))
        {
            return self.instance_by_ip(ip);
        }
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_host.get(&host.to_ascii_lowercase()).copied()
        } else {
            self.by_host.get(host).copied()
        }
    }

    pub fn can_reach(&self, src: CompartmentId, dst: CompartmentId) -> bool {
        self.reach[src.0 as usize][dst.0 as usize]
    }

    pub fn domain_is_allowlisted(&self, host: &str) -> bool {
        self.allow_domains.contains(&host.to_ascii_lowercase())
    }

    /// Exact match of an allowlisted URL: scheme, host (any case), port and
    /// path+query byte for byte.
    pub fn url_is_allowlisted(&self, scheme: &Scheme, host: &str, port: u16, path: &str) -> bool {
        self.allow_urls.iter().any(|u| {
            u.scheme == *scheme
                && u.port == port
                && u.path_and_query == path
                && u.host.eq_ignore_ascii_case(host)
        })
    }

    /// Is `host:port` the host of some allowlisted URL?
    pub fn url_host_is_allowlisted(&self, host: &str, port: u16) -> bool {
        self.allow_urls
            .iter()
            .any(|u| u.port == port && u.host.eq_ignore_ascii_case(host))
    }

    pub fn endpoint(&self, method: &str, path: &str) -> Option<Endpoint> {
        self.endpoints.lookup(method, path)
    }
}

impl Policy {
    pub fn allowlist_is_empty(&self) -> bool {
        self.allow_urls.is_empty() && self.allow_domains.is_empty()
    }

    pub fn allow_urls_len(&self) -> usize {
        self.allow_urls.len()
    }

    pub fn allow_domains_len(&self) -> usize {
        self.allow_domains.len()
    }
}
