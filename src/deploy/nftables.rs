//! `misp-guard-gw nft`: renders complete, loadable nftables rulesets from
//! the policy. Their sets hold exactly the instances' `ip . port` pairs and
//! the compartment-facing interfaces, so only MISP sync that crosses a
//! compartment boundary is handed to the gateway.
//!
//! Two tables, with different lifetimes (README "Lifecycle"):
//! - the guard, `inet misp_guard_gw_guard`: drops forwarded MISP sync and
//!   packets entering a compartment interface with a source address that
//!   does not route back through it. Installed by the apply step and the
//!   package, kept by stop, crash, restart and upgrade, removed only by an
//!   explicit uninstall or purge; also shipped as an include file so a
//!   firewall reload (`flush ruleset`) brings it back while the gateway is
//!   down. Without a gateway, sync is dropped, never forwarded;
//! - the capture table, `inet misp_guard_gw`: hands the instances'
//!   `ip . port` set arriving on the capture interfaces to the gateway
//!   (REDIRECT or TPROXY). With no gateway listening, REDIRECT meets a
//!   closed port (RST) and TPROXY finds no socket and falls through to the
//!   guard's drop: both fail closed, so it may stay after a stop.
//!
//! Each table is written create-then-delete-then-define, so loading a file
//! is idempotent and replaces the table atomically (one nft transaction).
//! Capture happens in prerouting only, so the gateway's own connections to
//! the real servers (output path) are never re-captured.

use std::fmt::Write;
use std::net::IpAddr;

use crate::policy::{ListenMode, Policy, TproxyRouting};

/// The capture table (present while the gateway is installed and running).
pub const CAPTURE_TABLE: &str = "misp_guard_gw";
/// The guard table (present from install to uninstall).
pub const GUARD_TABLE: &str = "misp_guard_gw_guard";
/// Header line `scripts/apply-nftables.sh` reads the TPROXY policy routing
/// from, so the script and the rules can never disagree on mark and table.
pub const ROUTING_HEADER: &str = "# tproxy-routing:";

/// Renders guard and capture tables for `mode` (Redirect or Tproxy), one
/// file and one transaction. `source` names the config in the header.
pub fn render(policy: &Policy, mode: ListenMode, source: &str) -> Result<String, String> {
    let listener = policy
        .gateway
        .listeners
        .iter()
        .find(|l| l.mode == mode)
        .ok_or_else(|| format!("no {} listener in gateway.listeners", mode.as_str()))?;
    let port = listener.addr.port();
    let sets = Sets::of(policy);
    let routing = policy.gateway.tproxy;

    let mut out = String::new();
    header(
        &mut out,
        policy,
        source,
        &format!("--mode {}", mode.as_str()),
    );
    if mode == ListenMode::Tproxy {
        let _ = writeln!(
            out,
            "{ROUTING_HEADER} mark {:#x} table {}",
            routing.mark, routing.table
        );
    }
    let _ = writeln!(out);
    guard_table(&mut out, &sets);
    let _ = writeln!(out);
    capture_table(&mut out, &sets, mode, port, routing);
    Ok(out)
}

/// Renders the guard table alone: the include file for `/etc/nftables.conf`.
pub fn render_guard(policy: &Policy, source: &str) -> String {
    let mut out = String::new();
    header(&mut out, policy, source, "--guard-only");
    let _ = writeln!(out);
    guard_table(&mut out, &Sets::of(policy));
    out
}

/// The policy's sets, sorted, as nftables elements.
struct Sets {
    ifaces: Vec<String>,
    v4: Vec<String>,
    v6: Vec<String>,
}

impl Sets {
    fn of(policy: &Policy) -> Sets {
        let elements = |v6: bool| {
            let mut items: Vec<String> = policy
                .instances
                .iter()
                .filter(|i| i.ip.is_ipv6() == v6)
                .map(|i| match i.ip {
                    IpAddr::V4(ip) => format!("{ip} . {}", i.port),
                    IpAddr::V6(ip) => format!("{ip} . {}", i.port),
                })
                .collect();
            items.sort();
            items.dedup();
            items
        };
        Sets {
            ifaces: policy.gateway.capture_interfaces.clone(),
            v4: elements(false),
            v6: elements(true),
        }
    }

    /// Rule prefix limiting a rule to the compartment interfaces, if any.
    fn iif(&self) -> &'static str {
        if self.ifaces.is_empty() {
            ""
        } else {
            "iifname @compartment_ifaces "
        }
    }

    /// Sets are per table: both tables declare the same ones.
    fn declare(&self, out: &mut String) {
        if !self.ifaces.is_empty() {
            let names: Vec<String> = self.ifaces.iter().map(|i| format!("\"{i}\"")).collect();
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
            ("misp_v4", "ipv4_addr", &self.v4),
            ("misp_v6", "ipv6_addr", &self.v6),
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
    }
}

fn header(out: &mut String, policy: &Policy, source: &str, args: &str) {
    let _ = writeln!(out, "#!/usr/sbin/nft -f");
    let _ = writeln!(out, "# misp-guard-gw rules, generated from {source}");
    let _ = writeln!(
        out,
        "# by `misp-guard-gw nft {args}`. Do not edit: regenerate."
    );
    let ids: Vec<&str> = policy.instances.iter().map(|i| i.id.as_str()).collect();
    let _ = writeln!(out, "# Instances: {}", ids.join(", "));
    if policy.gateway.capture_interfaces.is_empty() {
        let _ = writeln!(
            out,
            "# No gateway.capture_interfaces: MISP traffic from every interface is captured"
        );
        let _ = writeln!(
            out,
            "# and guarded, and there is no anti-spoofing check (it needs the interfaces)."
        );
    }
}

/// Create-then-delete makes the load idempotent on any nft version, and
/// the whole file is one transaction: the table is never absent.
fn replace_table(out: &mut String, name: &str) {
    let _ = writeln!(out, "table inet {name}");
    let _ = writeln!(out, "delete table inet {name}");
    let _ = writeln!(out, "table inet {name} {{");
}

fn guard_table(out: &mut String, sets: &Sets) {
    let iif = sets.iif();
    let _ = writeln!(
        out,
        "# Guard: stays while the gateway is stopped, crashed, restarting or"
    );
    let _ = writeln!(
        out,
        "# upgraded; only an explicit uninstall or purge removes it."
    );
    replace_table(out, GUARD_TABLE);
    sets.declare(out);
    if !sets.ifaces.is_empty() {
        let _ = writeln!(out, "    chain anti_spoofing {{");
        let _ = writeln!(
            out,
            "        type filter hook prerouting priority raw; policy accept;"
        );
        let _ = writeln!(
            out,
            "        # A compartment may only use source addresses that route back"
        );
        let _ = writeln!(
            out,
            "        # through its own interface (strict reverse-path check)."
        );
        let _ = writeln!(out, "        {iif}fib saddr . iif oif missing counter drop");
        let _ = writeln!(out, "    }}");
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "    chain no_bypass {{");
    let _ = writeln!(
        out,
        "        type filter hook forward priority filter; policy accept;"
    );
    let _ = writeln!(
        out,
        "        # MISP sync is never routed through uninspected: captured, it is"
    );
    let _ = writeln!(
        out,
        "        # delivered locally and never forwarded; otherwise it ends here."
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
}

fn capture_table(
    out: &mut String,
    sets: &Sets,
    mode: ListenMode,
    port: u16,
    routing: TproxyRouting,
) {
    let iif = sets.iif();
    let _ = writeln!(
        out,
        "# Capture: hands the instances' ip . port set to the gateway."
    );
    replace_table(out, CAPTURE_TABLE);
    sets.declare(out);
    let _ = writeln!(out, "    chain capture {{");
    match mode {
        ListenMode::Tproxy => {
            let mark = format!("meta mark set meta mark | {:#010x}", routing.mark);
            let _ = writeln!(
                out,
                "        type filter hook prerouting priority mangle; policy accept;"
            );
            let _ = writeln!(
                out,
                "        # Replies from an instance to the gateway's transparent-source"
            );
            let _ = writeln!(
                out,
                "        # connection (on whichever interface the instance is); nothing"
            );
            let _ = writeln!(
                out,
                "        # else with a transparent socket is handed over."
            );
            let _ = writeln!(
                out,
                "        ip saddr . tcp sport @misp_v4 socket transparent 1 {mark} accept"
            );
            let _ = writeln!(
                out,
                "        ip6 saddr . tcp sport @misp_v6 socket transparent 1 {mark} accept"
            );
            let _ = writeln!(
                out,
                "        {iif}ip daddr . tcp dport @misp_v4 tproxy ip to :{port} {mark} accept"
            );
            let _ = writeln!(
                out,
                "        {iif}ip6 daddr . tcp dport @misp_v6 tproxy ip6 to :{port} {mark} accept"
            );
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
    let _ = writeln!(out, "}}");
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

    /// The text of table `name` in a rendered file.
    fn table<'a>(rendered: &'a str, name: &str) -> &'a str {
        let start = rendered
            .find(&format!("table inet {name} {{"))
            .unwrap_or_else(|| panic!("no table {name}: {rendered}"));
        let rest = &rendered[start..];
        &rest[..rest.find("\n}\n").expect("table end") + 3]
    }

    #[test]
    fn sets_come_from_the_policy() {
        let p = policy(
            r#"{"listeners": [{"mode": "redirect", "listen": "[::]:15001"}], "capture_interfaces": ["eth0.10", "eth0.20"]}"#,
        );
        let r = render(&p, ListenMode::Redirect, "t.json").unwrap();
        for name in [GUARD_TABLE, CAPTURE_TABLE] {
            let t = table(&r, name);
            assert!(t.contains("elements = { 192.0.2.1 . 443 }"), "{t}");
            assert!(t.contains("elements = { 2001:db8::2 . 8443 }"), "{t}");
            assert!(t.contains(r#"elements = { "eth0.10", "eth0.20" }"#), "{t}");
        }
        let capture = table(&r, CAPTURE_TABLE);
        assert!(
            capture.contains(
                "iifname @compartment_ifaces ip daddr . tcp dport @misp_v4 redirect to :15001"
            ),
            "{capture}"
        );
        assert!(capture.contains("type nat hook prerouting priority dstnat"));
        assert!(!r.contains(ROUTING_HEADER), "redirect needs no routing");
    }

    #[test]
    fn the_guard_drops_forwarded_sync_and_spoofed_sources_without_the_capture() {
        let p = policy(
            r#"{"listeners": [{"mode": "redirect", "listen": "[::]:15001"}], "capture_interfaces": ["eth0.10"]}"#,
        );
        let all = render(&p, ListenMode::Redirect, "t.json").unwrap();
        let guard = table(&all, GUARD_TABLE);
        assert!(guard.contains("type filter hook forward priority filter"));
        assert!(guard
            .contains("iifname @compartment_ifaces ip daddr . tcp dport @misp_v4 counter drop"));
        assert!(
            guard.contains("iifname @compartment_ifaces fib saddr . iif oif missing counter drop")
        );
        assert!(!guard.contains("redirect") && !guard.contains("tproxy"));
        assert!(!table(&all, CAPTURE_TABLE).contains("drop"));
        // The include file is that same table, alone.
        let alone = render_guard(&p, "t.json");
        assert!(alone.contains(guard), "{alone}");
        assert!(!alone.contains(&format!("table inet {CAPTURE_TABLE} ")));
        // Without interfaces there is nothing to check sources against.
        let p = policy(r#"{"listeners": [{"mode": "redirect", "listen": "[::]:1"}]}"#);
        assert!(!render_guard(&p, "t.json").contains("fib"));
    }

    #[test]
    fn tproxy_hands_over_only_the_instances_and_uses_the_configured_routing() {
        let p = policy(r#"{"listeners": [{"mode": "tproxy", "listen": "0.0.0.0:15002"}]}"#);
        let r = render(&p, ListenMode::Tproxy, "t.json").unwrap();
        assert!(
            r.contains("ip daddr . tcp dport @misp_v4 tproxy ip to :15002 meta mark set meta mark | 0x00000001 accept"),
            "{r}"
        );
        assert!(
            r.contains("ip saddr . tcp sport @misp_v4 socket transparent 1 meta mark set"),
            "{r}"
        );
        // No rule hands over transparent-socket traffic of any address.
        assert!(
            !r.lines()
                .any(|l| l.trim_start().starts_with("meta l4proto tcp socket")),
            "{r}"
        );
        assert!(r.contains("# tproxy-routing: mark 0x1 table 100\n"), "{r}");
        assert!(!r.contains("iifname"), "no interfaces configured: {r}");
        let e = render(&p, ListenMode::Redirect, "t.json").unwrap_err();
        assert!(e.contains("no redirect listener"));

        let p = policy(
            r#"{"listeners": [{"mode": "tproxy", "listen": "0.0.0.0:15002"}], "tproxy_mark": 4096, "tproxy_table": 4242}"#,
        );
        let r = render(&p, ListenMode::Tproxy, "t.json").unwrap();
        assert!(
            r.contains("# tproxy-routing: mark 0x1000 table 4242\n"),
            "{r}"
        );
        assert!(
            r.contains("meta mark set meta mark | 0x00001000 accept"),
            "{r}"
        );
    }
}
