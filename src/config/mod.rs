//! Loading the config file: misp-guard's `config.json` unchanged, plus an
//! optional `gateway` section. Parsing, validation and compilation into a
//! [`Policy`] happen once here; every error names the file and the JSON path
//! of the offending field, and nothing half-loaded is ever returned.

mod gateway;
pub mod schema;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::policy::{
    caseless, CaselessSet, CompartmentId, EndpointTable, Instance, InstanceId, Limits, Policy,
    RequiredTaxonomy, Rules,
};
use crate::vocab::{is_hostname, is_id, is_uuid, parse_ip, parse_url};
use schema::{RawConfig, RawInstance, RawLimits};

pub(crate) type CompileError = (String, String);

/// A config that cannot be used, with where and why.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    /// JSON path of the bad field (`instances.instance_1.port`), empty for
    /// whole-file problems.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.path,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads, validates and compiles the config at `path`.
pub fn load(path: &Path) -> Result<Policy, ConfigError> {
    from_slice(&read(path)?, path)
}

/// The config file's bytes (for callers that also need what they read).
pub fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        path: String::new(),
        message: format!("cannot read config file: {e}"),
    })
}

/// Validates and compiles config text; `file` only labels errors.
pub fn from_slice(bytes: &[u8], file: &Path) -> Result<Policy, ConfigError> {
    let err = |path: String, message: String| ConfigError {
        file: file.to_path_buf(),
        path,
        message,
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        err(path, e.into_inner().to_string())
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    compile(raw, base).map_err(|(path, message)| err(path, message))
}

fn compile(raw: RawConfig, base: &Path) -> Result<Policy, CompileError> {
    let mut warnings = Vec::new();

    // Compartments: every name used anywhere gets an index.
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for (src, dsts) in &raw.compartments_rules.can_reach.0 {
        if !is_id(src) {
            return Err((
                format!("compartments_rules.can_reach.{src}"),
                "compartment id must match ^[a-z0-9_]+$".into(),
            ));
        }
        names.insert(src);
        for (i, dst) in dsts.iter().enumerate() {
            if !is_id(dst) {
                return Err((
                    format!("compartments_rules.can_reach.{src}[{i}]"),
                    format!("compartment id {dst:?} must match ^[a-z0-9_]+$"),
                ));
            }
            names.insert(dst);
        }
    }
    for inst in raw.instances.0.values() {
        names.insert(&inst.compartment_id);
    }
    let compartments: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let comp_index: HashMap<&str, CompartmentId> = compartments
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), CompartmentId(i as u16)))
        .collect();
    let mut reach = vec![vec![false; compartments.len()]; compartments.len()];
    for (src, dsts) in &raw.compartments_rules.can_reach.0 {
        for dst in dsts {
            reach[comp_index[src.as_str()].0 as usize][comp_index[dst.as_str()].0 as usize] = true;
        }
    }

    // Instances.
    if raw.instances.0.len() > u16::MAX as usize {
        return Err(("instances".into(), "too many instances".into()));
    }
    let mut instances = Vec::with_capacity(raw.instances.0.len());
    let mut by_ip = HashMap::new();
    let mut by_host = HashMap::new();
    for (idx, (id, inst)) in raw.instances.0.iter().enumerate() {
        let at = |field: &str| format!("instances.{id}.{field}");
        if !is_id(id) {
            return Err((
                format!("instances.{id}"),
                "instance id must match ^[a-z0-9_]+$".into(),
            ));
        }
        let instance = compile_instance(id, inst, &comp_index, &at)?;
        let iid = InstanceId(idx as u16);
        if let Some(prev) = by_ip.insert(instance.ip, iid) {
            return Err((
                at("ip"),
                format!(
                    "{} is also the ip of instance {}",
                    instance.ip,
                    instances_id(&instances, prev)
                ),
            ));
        }
        if let Some(prev) = by_host.insert(instance.host.clone(), iid) {
            return Err((
                at("host"),
                format!(
                    "{} is also the host of instance {}",
                    instance.host,
                    instances_id(&instances, prev)
                ),
            ));
        }
        if !raw
            .compartments_rules
            .can_reach
            .0
            .contains_key(&inst.compartment_id)
        {
            warnings.push(format!(
                "instances.{id}.compartment_id: compartment {} has no can_reach entry, so {id} can reach nothing",
                inst.compartment_id
            ));
        }
        instances.push(instance);
    }
    // A host name that is also some instance's IP literal would make the
    // mapping ambiguous; `host` must be a name, so that cannot happen, but an
    // instance host may not collide with an allowlisted domain either: the
    // allowlist would silently switch off every rule for it.
    let mut allow_domains = HashSet::new();
    for (i, d) in raw.allowlist.domains.iter().enumerate() {
        let at = format!("allowlist.domains[{i}]");
        if !is_hostname(d) {
            return Err((at, format!("{d:?} is not a valid domain name")));
        }
        let d = d.to_ascii_lowercase();
        if by_host.contains_key(&d) {
            return Err((
                at,
                format!("{d} is an instance host; allowlisting it would bypass the policy"),
            ));
        }
        allow_domains.insert(d);
    }
    let mut allow_urls = Vec::new();
    for (i, u) in raw.allowlist.urls.iter().enumerate() {
        let at = format!("allowlist.urls[{i}]");
        let url = parse_url(u).map_err(|e| (at.clone(), format!("{u:?}: {e}")))?;
        if by_host.contains_key(&url.host)
            || parse_ip(&url.host).is_some_and(|ip| by_ip.contains_key(&ip))
        {
            return Err((
                at,
                format!(
                    "{} is an instance; allowlisting it would bypass the policy",
                    url.host
                ),
            ));
        }
        allow_urls.push(url);
    }

    let mut raw_gateway = raw.gateway.unwrap_or_default();
    let ids: Vec<&str> = raw.instances.0.keys().map(String::as_str).collect();
    let limits = compile_limits(raw_gateway.limits.take().unwrap_or_default())?;
    let gateway = gateway::compile(raw_gateway, &ids, base, &mut warnings)?;

    Ok(Policy {
        instances,
        compartments,
        reach,
        by_ip,
        by_host,
        allow_domains,
        allow_urls,
        endpoints: EndpointTable::new(),
        limits,
        gateway,
        warnings,
    })
}

fn instances_id(instances: &[Instance], id: InstanceId) -> &str {
    &instances[id.0 as usize].id
}

fn compile_instance(
    id: &str,
    inst: &RawInstance,
    comp_index: &HashMap<&str, CompartmentId>,
    at: &dyn Fn(&str) -> String,
) -> Result<Instance, CompileError> {
    let ip = parse_ip(&inst.ip).ok_or_else(|| {
        (
            at("ip"),
            format!("{:?} is not an IPv4 or IPv6 address", inst.ip),
        )
    })?;
    if !is_hostname(&inst.host) {
        return Err((
            at("host"),
            format!("{:?} is not a valid host name", inst.host),
        ));
    }
    if inst.host.parse::<std::net::IpAddr>().is_ok() {
        return Err((
            at("host"),
            "host must be a name; put addresses in ip".into(),
        ));
    }
    let port = u16::try_from(inst.port)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| (at("port"), format!("{} is not a port (1-65535)", inst.port)))?;
    if !is_id(&inst.compartment_id) {
        return Err((
            at("compartment_id"),
            "compartment id must match ^[a-z0-9_]+$".into(),
        ));
    }

    let mut blocked_distribution = [false; 6];
    for (i, level) in inst.blocked_distribution_levels.iter().enumerate() {
        match level.as_str() {
            "0" | "1" | "2" | "3" | "4" | "5" => {
                blocked_distribution[(level.as_bytes()[0] - b'0') as usize] = true
            }
            _ => {
                return Err((
                    at(&format!("blocked_distribution_levels[{i}]")),
                    format!("{level:?} is not one of \"0\"..\"5\""),
                ))
            }
        }
    }
    for (i, uuid) in inst.blocked_sharing_groups_uuids.iter().enumerate() {
        if !is_uuid(uuid.trim()) {
            return Err((
                at(&format!("blocked_sharing_groups_uuids[{i}]")),
                format!("{uuid:?} is not a uuid"),
            ));
        }
    }

    let tax = &inst.taxonomies_rules;
    let mut required_taxonomies = Vec::new();
    for (i, name) in tax.required_taxonomies.iter().enumerate() {
        if name.trim().is_empty() {
            return Err((
                at(&format!("taxonomies_rules.required_taxonomies[{i}]")),
                "empty taxonomy name".into(),
            ));
        }
        let folded = caseless::fold(name);
        let allowed = tax
            .allowed_tags
            .0
            .iter()
            .filter(|(k, _)| caseless::fold(k) == folded)
            .flat_map(|(_, tags)| tags.iter())
            .collect::<Vec<_>>();
        required_taxonomies.push(RequiredTaxonomy {
            name: name.clone(),
            prefix: format!("{folded}:"),
            allowed: CaselessSet::new(allowed),
        });
    }
    for key in tax.allowed_tags.0.keys() {
        if key.trim().is_empty() {
            return Err((
                at("taxonomies_rules.allowed_tags"),
                "empty taxonomy name".into(),
            ));
        }
    }

    Ok(Instance {
        id: id.to_string(),
        ip,
        host: inst.host.to_ascii_lowercase(),
        port,
        compartment: comp_index[inst.compartment_id.as_str()],
        rules: Rules {
            blocked_tags: CaselessSet::new(&tax.blocked_tags),
            required_taxonomies,
            blocked_distribution,
            blocked_sharing_groups: CaselessSet::new(&inst.blocked_sharing_groups_uuids),
            blocked_attribute_types: CaselessSet::new(&inst.blocked_attribute_types),
            blocked_attribute_categories: CaselessSet::new(&inst.blocked_attribute_categories),
            blocked_object_types: CaselessSet::new(&inst.blocked_object_types),
        },
    })
}

fn compile_limits(raw: RawLimits) -> Result<Limits, CompileError> {
    let d = Limits::default();
    // Head limits are bounded both ways: a head under 1 KiB or with no
    // field cannot carry a MISP request; above the maximum, heads (held per
    // connection, outside the body budget) would cost more than bodies.
    let within = |v: Option<u64>, default: u64, name: &str, (lo, hi): (u64, u64)| match v {
        None => Ok(default),
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        Some(n) => Err((
            format!("gateway.limits.{name}"),
            format!("{n} is not between {lo} and {hi}"),
        )),
    };
    let positive = |v: Option<u64>, default: u64, name: &str| match v {
        Some(0) => Err((
            format!("gateway.limits.{name}"),
            "must be greater than 0".to_string(),
        )),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let limits = Limits {
        max_body_bytes: positive(raw.max_body_bytes, d.max_body_bytes, "max_body_bytes")?,
        max_decoded_body_bytes: positive(
            raw.max_decoded_body_bytes,
            d.max_decoded_body_bytes,
            "max_decoded_body_bytes",
        )?,
        max_decompression_ratio: positive(
            raw.max_decompression_ratio,
            d.max_decompression_ratio,
            "max_decompression_ratio",
        )?,
        decompression_ratio_floor_bytes: raw
            .decompression_ratio_floor_bytes
            .unwrap_or(d.decompression_ratio_floor_bytes),
        max_connections: positive(raw.max_connections, d.max_connections, "max_connections")?,
        max_connections_per_client: positive(
            raw.max_connections_per_client,
            d.max_connections_per_client,
            "max_connections_per_client",
        )?,
        max_buffered_bytes: d.max_buffered_bytes,
        max_header_count: within(
            raw.max_header_count,
            d.max_header_count,
            "max_header_count",
            (1, 10_000),
        )?,
        max_header_bytes: within(
            raw.max_header_bytes,
            d.max_header_bytes,
            "max_header_bytes",
            (1024, 1 << 20),
        )?,
    };
    // Unset, the budget grows with a larger body limit (a default must not
    // make a valid max_body_bytes unusable); set, it must hold one
    // largest body, or such a body would always be refused.
    let max_buffered_bytes = match raw.max_buffered_bytes {
        None => d.max_buffered_bytes.max(limits.max_body_bytes),
        Some(n) if n < limits.max_body_bytes => {
            return Err((
                "gateway.limits.max_buffered_bytes".into(),
                format!(
                    "{n} is below gateway.limits.max_body_bytes ({}): one largest body must fit",
                    limits.max_body_bytes
                ),
            ))
        }
        // (0 is below any max_body_bytes, which is at least 1.)
        Some(n) => n,
    };
    Ok(Limits {
        max_buffered_bytes,
        ..limits
    })
}

#[cfg(test)]
mod tests;
