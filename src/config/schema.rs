//! The config file as written on disk: serde structs that mirror misp-guard's
//! `config.json` (and its JSON schema) plus the gateway's own optional
//! `gateway` section.
//!
//! Every struct denies unknown keys: in a security policy a typo such as
//! `blocked_tag` must stop the gateway, not silently drop a rule. Maps whose
//! keys are ids use [`UniqueMap`] so a duplicated id is an error too (plain
//! serde maps keep the last value without a word).

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub allowlist: RawAllowlist,
    pub compartments_rules: RawCompartmentsRules,
    pub instances: UniqueMap<RawInstance>,
    #[serde(default)]
    pub gateway: Option<RawGateway>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllowlist {
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub domains: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompartmentsRules {
    #[serde(default)]
    pub can_reach: UniqueMap<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstance {
    pub ip: String,
    pub host: String,
    pub port: u32,
    pub compartment_id: String,
    pub affiliation: String,
    pub taxonomies_rules: RawTaxonomiesRules,
    pub blocked_distribution_levels: Vec<String>,
    pub blocked_sharing_groups_uuids: Vec<String>,
    pub blocked_attribute_types: Vec<String>,
    pub blocked_attribute_categories: Vec<String>,
    pub blocked_object_types: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTaxonomiesRules {
    #[serde(default)]
    pub required_taxonomies: Vec<String>,
    #[serde(default)]
    pub allowed_tags: UniqueMap<Vec<String>>,
    #[serde(default)]
    pub blocked_tags: Vec<String>,
}

/// Gateway-only settings. Everything has a default, so a plain misp-guard
/// config (without this section) runs unchanged.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    #[serde(default)]
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub timeouts: Option<RawTimeouts>,
    /// Per-instance data-path settings, keyed by instance id.
    #[serde(default)]
    pub instances: UniqueMap<RawInstanceGateway>,
    /// Connect upstream from the client's own address (TPROXY only).
    #[serde(default)]
    pub transparent_source: bool,
    /// Compartment-facing interfaces (e.g. VLAN sub-interfaces) whose MISP
    /// traffic the shipped nftables rules capture.
    #[serde(default)]
    pub capture_interfaces: Vec<String>,
    /// Firewall mark (bits) the TPROXY rules set; default 0x1.
    #[serde(default)]
    pub tproxy_mark: Option<u32>,
    /// Routing table the TPROXY mark looks up; default 100.
    #[serde(default)]
    pub tproxy_table: Option<u32>,
    /// JSON-lines audit trail of every decided exchange (`--audit-log`).
    #[serde(default)]
    pub audit_log: Option<String>,
    /// `enforce` (default) or `monitor`.
    #[serde(default)]
    pub mode: Option<String>,
    /// The health and metrics listener (off when absent).
    #[serde(default)]
    pub metrics: Option<RawMetrics>,
    /// Level of the log line for each allowed exchange (`off`, `error`,
    /// `warn`, `info`, `debug`, `trace`); default `debug`.
    #[serde(default)]
    pub log_allowed: Option<String>,
    /// Reload when the config file changes (default true).
    #[serde(default)]
    pub watch_config: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `ip:port` of `/healthz`, `/readyz`, `/metrics`.
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// `redirect`, `tproxy` or `explicit`.
    pub mode: String,
    /// `ip:port` (`[v6]:port`).
    pub listen: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_cert: Option<String>,
    pub ca_key: Option<String>,
    pub upstream_ca: Option<String>,
    #[serde(default)]
    pub insecure_upstream: bool,
    #[serde(default = "default_true")]
    pub use_system_roots: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub handshake_secs: Option<u64>,
    pub request_head_secs: Option<u64>,
    pub idle_secs: Option<u64>,
    /// How long an idle upstream connection is kept for reuse; 0: never.
    pub upstream_idle_secs: Option<u64>,
    pub upstream_connect_secs: Option<u64>,
    pub upstream_response_secs: Option<u64>,
    pub body_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub body_min_rate: Option<u64>,
    pub body_min_rate_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstanceGateway {
    /// Certificate (chain) and key presented to clients for this instance,
    /// instead of a leaf minted from the gateway CA.
    pub cert: Option<String>,
    pub key: Option<String>,
    /// Extra CA that signs this instance's server certificate.
    pub upstream_ca: Option<String>,
    /// SHA-256 of the instance's certificate (hex, colons optional).
    pub upstream_pin_sha256: Option<String>,
    #[serde(default)]
    pub insecure_upstream: bool,
    /// `enforce` or `monitor`; `gateway.mode` when absent.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body_bytes: Option<u64>,
    pub max_decoded_body_bytes: Option<u64>,
    pub max_decompression_ratio: Option<u64>,
    pub decompression_ratio_floor_bytes: Option<u64>,
    pub max_connections: Option<u64>,
    pub max_connections_per_client: Option<u64>,
    pub max_buffered_bytes: Option<u64>,
    pub max_header_count: Option<u64>,
    pub max_header_bytes: Option<u64>,
}

/// An id-keyed JSON object that refuses duplicate keys and keeps file order
/// out of the picture (sorted by key).
#[derive(Debug)]
pub struct UniqueMap<V>(pub BTreeMap<String, V>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        UniqueMap(BTreeMap::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UniqueMapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueMapVisitor<V> {
            type Value = UniqueMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
                    }
                    let value = map.next_value()?;
                    out.insert(key, value);
                }
                Ok(UniqueMap(out))
            }
        }

        deserializer.deserialize_map(UniqueMapVisitor(PhantomData))
    }
}
