//! `misp-guard-gw nft`: renders a complete, loadable nftables ruleset from
//! the policy. Its sets hold exactly the instances' `ip . port` pairs and
//! the compartment-facing interfaces, so only MISP sync that crosses a
//! compartment boundary is handed to the gateway.
//!
//! Design notes (DATAPATH.md):
//! - one `inet` table covers IPv4 and IPv6; re-loading replaces it whole
//!   (the file starts by creating then deleting the table, so `nft -f` is
//!   idempotent);
//! - capture happens in prerouting only, so the gateway's own connections
//!   to the real servers (output path) are never re-captured;
//! - a forward-chain rule drops MISP sync that somehow escaped capture:
//!   nothing reaches an instance port unfiltered. Everything else between
//!   compartments is left to the site's firewall;
//! - TPROXY marks with a masked mark and needs the policy routing that
//!   `scripts/apply-nftables.sh` installs (fwmark 0x1 → table 100).

use std::fmt::Write;
use std::net::IpAddr;

use crate::policy::{ListenMode, Policy};

pub const TABLE: &str = "misp_guard_gw";
/// Mark for TPROXY'd packets; matched with a mask so other marks coexist.
pub const MARK: &str = "0x00000001";

/// Renders the ruleset for `mode` (Redirect or Tproxy). `source` names the
/// config in the header comment.
pub fn render(policy: &Policy, mode: ListenMode, source: &str) -> Result<String, String> {
    let listener = policy
        .gateway
        .listeners
        .iter()
        .find(|l| l.mode == mode)
        .ok_or_else(|| format!("no {} listener in gateway.listeners", mode.as_str()))?;
    let port = listener.addr.port();
    let (v4, v6): (Vec<_>, Vec<_>) = policy.instances.iter().partition(|i| i.ip.is_ipv4());
    let elements = |list: &[&crate::policy::Instance]| {
        let mut items: Vec<String> = list
            .iter()
            .map(|i| match i.ip {
                IpAddr::V4(ip) => format!("{ip} . {}", i.port),
                IpAddr::V6(ip) => format!("{ip} . {}", i.port),
            })
            .collect();
        items.sort();
        items.dedup();
        items
    };
    let ifaces = &policy.gateway.capture_interfaces;
    let iif = if ifaces.is_empty() {
        String::new()
    } else {
        "iifname @compartment_ifaces ".to_string()
    };

    let mut out = String::new();
    let _ = writeln!(out, "#!/usr/sbin/nft -f");
    let _ = writeln!(
        out,
        "# misp-guard-gw capture rules ({} mode), generated from {source}",
        mode.as_str()
    );
    let _ = writeln!(
        out,
        "# by `misp-guard-gw nft --mode {}`. Do not edit: regenerate.",
        mode.as_str()
    );
    let _ = writeln!(
        out,
        "# Instances: {}",
        policy
            .instances
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if ifaces.is_empty() {
        let _ = writeln!(
            out,
            "# No gateway.capture_interfaces: MISP traffic from every interface is captured."
        );
    }
    let _ = writeln!(out);
    // Create-then-delete makes the load idempotent on any nft version.
    let _ = writeln!(out, "table inet {TABLE}");
    let _ = writeln!(out, "delete table inet {TABLE}");
    let _ = writeln!(out);
    let _ = writeln!(out, "table inet {TABLE} {{");
    if !ifaces.is_empty() {
        let names: Vec<String> = ifaces.iter().map(|i| format!("\"{i}\"")).collect();
        let _ = writeln!(
            out,
            "    # Compartment-facing interfaces (gateway.capture_interfaces)."
        );
        let _ = writeln!(out, "    set compartment_ifaces {{");
        let _ = writeln!(out, "        type ifname");
        let _ = writeln!(out, "        elements = {{ {} }}", names.join(", "));
        let _ = writeln!(out, "    }}");
        let _ = writeln!(out);
    }
    for (name, kind, items) in [
        ("misp_v4", "ipv4_addr", elements(&v4)),
        ("misp_v6", "ipv6_addr", elements(&v6)),
    ] {
        let _ = writeln!(
            out,
            "    # MISP instances ({kind} . port), from the policy."
        );
        let _ = writeln!(out, "    set {name} {{");
        let _ = writeln!(out, "        type {kind} . inet_service");
        if !items.is_empty() {
            let _ = writeln!(out, "        elements = {{ {} }}", items.join(", "));
        }
        let _ = writeln!(out, "    }}");
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "    chain capture {{");
    match mode {
        ListenMode::Tproxy => {
            let _ = writeln!(
                out,
                "        type filter hook prerouting priority mangle; policy accept;"
            );
            let _ = writeln!(
                out,
                "        # Packets of flows that already have a transparent socket (replies"
            );
            let _ = writeln!(
                out,
                "        # to a transparent-source upstream connection) go to the gateway."
            );
            let _ = writeln!(out, "        meta l4proto tcp socket transparent 1 meta mark set meta mark | {MARK} accept");
            let _ = writeln!(out, "        {iif}ip daddr . tcp dport @misp_v4 tproxy ip to :{port} meta mark set meta mark | {MARK} accept");
            let _ = writeln!(out, "        {iif}ip6 daddr . tcp dport @misp_v6 tproxy ip6 to :{port} meta mark set meta mark | {MARK} accept");
        }
        _ => {
            let _ = writeln!(
                out,
                "        type nat hook prerouting priority dstnat; policy accept;"
            );
            let _ = writeln!(
                out,
                "        {iif}ip daddr . tcp dport @misp_v4 redirect to :{port}"
            );
            let _ = writeln!(
                out,
                "        {iif}ip6 daddr . tcp dport @misp_v6 redirect to :{port}"
            );
        }
    }
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out);
    let _ = writeln!(out, "    chain no_bypass {{");
    let _ = writeln!(
        out,
        "        type filter hook forward priority filter; policy accept;"
    );
    let _ = writeln!(
        out,
        "        # MISP sync that escaped capture is never routed through uninspected."
    );
    let _ = writeln!(
        out,
        "        {iif}ip daddr . tcp dport @misp_v4 counter drop"
    );
    let _ = writeln!(
        out,
        "        {iif}ip6 daddr . tcp dport @misp_v6 counter drop"
    );
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out, "}}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn policy(gateway: &str) -> Policy {
        let cfg = format!(
            r#"{{"allowlist": {{}}, "compartments_rules": {{"can_reach": {{"a": ["b"]}}}},
            "instances": {{
              "one": {{"ip": "192.0.2.1", "host": "one.example", "port": 443, "compartment_id": "a", "affiliation": "",
                "taxonomies_rules": {{}}, "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
                "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []}},
              "two": {{"ip": "2001:db8::2", "host": "two.example", "port": 8443, "compartment_id": "b", "affiliation": "",
                "taxonomies_rules": {{}}, "blocked_distribution_levels": [], "blocked_sharing_groups_uuids": [],
                "blocked_attribute_types": [], "blocked_attribute_categories": [], "blocked_object_types": []}}
            }}, "gateway": {gateway}}}"#
        );
        crate::config::from_slice(cfg.as_bytes(), Path::new("t.json")).unwrap()
    }

    #[test]
    fn sets_come_from_the_policy() {
        let p = policy(
            r#"{"listeners": [{"mode": "redirect", "listen": "[::]:15001"}], "capture_interfaces": ["eth0.10", "eth0.20"]}"#,
        );
        let r = render(&p, ListenMode::Redirect, "t.json").unwrap();
        assert!(r.contains("elements = { 192.0.2.1 . 443 }"), "{r}");
        assert!(r.contains("elements = { 2001:db8::2 . 8443 }"), "{r}");
        assert!(r.contains(r#"elements = { "eth0.10", "eth0.20" }"#), "{r}");
        assert!(
            r.contains(
                "iifname @compartment_ifaces ip daddr . tcp dport @misp_v4 redirect to :15001"
            ),
            "{r}"
        );
        assert!(r.contains("type nat hook prerouting priority dstnat"));
    }

    #[test]
    fn tproxy_marks_with_a_mask_and_needs_its_listener() {
        let p = policy(r#"{"listeners": [{"mode": "tproxy", "listen": "0.0.0.0:15002"}]}"#);
        let r = render(&p, ListenMode::Tproxy, "t.json").unwrap();
        assert!(
            r.contains("tproxy ip to :15002 meta mark set meta mark | 0x00000001 accept"),
            "{r}"
        );
        assert!(!r.contains("iifname"), "no interfaces configured: {r}");
        let e = render(&p, ListenMode::Redirect, "t.json").unwrap_err();
        assert!(e.contains("no redirect listener"));
    }
}
