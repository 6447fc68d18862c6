//! Router deployment artefacts: the shipped nftables files are exactly what
//! `misp-guard-gw nft` renders for `config.sample.json`, nftables accepts
//! them, and the apply/remove scripts are idempotent — all checked inside a
//! throw-away network namespace (root), never on the host's own ruleset.

mod support;

use std::path::Path;
use std::process::Command;

use support::gateway_cli;
use support::netns::{must, prerequisites_met, run};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn render(mode: &str) -> String {
    let config = root().join("config.sample.json");
    let out = gateway_cli(&["nft", "--config", config.to_str().unwrap(), "--mode", mode]);
    String::from_utf8(out).unwrap()
}

#[test]
fn shipped_rulesets_match_the_sample_policy() {
    for mode in ["redirect", "tproxy"] {
        let shipped = std::fs::read_to_string(root().join(format!("nftables/{mode}.nft"))).unwrap();
        assert_eq!(
            shipped,
            render(mode),
            "nftables/{mode}.nft is stale: regenerate with `misp-guard-gw nft --config config.sample.json --mode {mode}`"
        );
    }
    let config = root().join("config.sample.json");
    let guard = gateway_cli(&["nft", "--config", config.to_str().unwrap(), "--guard-only"]);
    assert_eq!(
        std::fs::read_to_string(root().join("nftables/guard.nft")).unwrap(),
        String::from_utf8(guard).unwrap(),
        "nftables/guard.nft is stale: regenerate with `misp-guard-gw nft --config config.sample.json --guard-only`"
    );
}

/// A single namespace for this test, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("mgw-{}-{tag}", std::process::id());
        must(&["ip", "netns", "add", &name]);
        // A router's loopback is up; TPROXY's local route needs it.
        must(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    fn exec(&self, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(args);
        run(&full, None)
    }

    fn output(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.0], None);
    }
}

#[test]
fn scripts_apply_and_remove_idempotently_in_a_namespace() {
    if !prerequisites_met("scripts_apply_and_remove_idempotently_in_a_namespace") {
        return;
    }
    let ns = Netns::new("deploy");
    let state = support::TempDir::new("deploy-state");
    let state = state.0.to_str().unwrap();
    let apply = root().join("scripts/apply-nftables.sh");
    let remove = root().join("scripts/remove-nftables.sh");
    let (apply, remove) = (apply.to_str().unwrap(), remove.to_str().unwrap());
    for mode in ["redirect", "tproxy"] {
        let file = root().join(format!("nftables/{mode}.nft"));
        ns.exec(&["nft", "-c", "-f", file.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        // Twice: applying is idempotent.
        for _ in 0..2 {
            ns.exec(&[apply, "--mode", mode, "--state-dir", state])
                .unwrap_or_else(|e| panic!("{mode}: {e}"));
        }
        for table in ["misp_guard_gw", "misp_guard_gw_guard"] {
            let listed = ns.output(&["nft", "list", "table", "inet", table]);
            assert!(
                listed.contains("192.0.2.10 . 443"),
                "{mode} {table}: {listed}"
            );
        }
        for fam in ["-4", "-6"] {
            let rules = ns.output(&["ip", fam, "rule", "show"]);
            assert_eq!(
                rules.matches("fwmark 0x1/0x1 lookup 100").count(),
                usize::from(mode == "tproxy"),
                "{rules}"
            );
        }
        for _ in 0..2 {
            ns.exec(&[remove, "--state-dir", state]).unwrap();
        }
        for table in ["misp_guard_gw", "misp_guard_gw_guard"] {
            assert!(
                ns.exec(&["nft", "list", "table", "inet", table]).is_err(),
                "{mode}: {table} left behind"
            );
        }
        assert!(!ns
            .output(&["ip", "-6", "rule", "show"])
            .contains("lookup 100"));
        assert!(!ns
            .output(&["ip", "-4", "route", "show", "table", "all"])
            .contains("table 100"));
    }
    // A broken ruleset is refused before anything changes.
    let ns = Netns::new("deploy-bad");
    let bad = std::env::temp_dir().join(format!("mgw-bad-{}.nft", std::process::id()));
    std::fs::write(&bad, "table inet misp_guard_gw { chain x { nonsense } }\n").unwrap();
    assert!(ns
        .exec(&[
            apply,
            "--rules",
            bad.to_str().unwrap(),
            "--state-dir",
            state,
            "--enable-forwarding"
        ])
        .is_err());
    let _ = std::fs::remove_file(&bad);
    assert_eq!(
        ns.output(&["sysctl", "-n", "net.ipv4.ip_forward"]).trim(),
        "0",
        "nothing applied"
    );
}

/// What `ip rule`, every routing table and the forwarding sysctls look like.
fn routing_snapshot(ns: &Netns) -> String {
    let mut all = String::new();
    for args in [
        &["ip", "-4", "rule", "show"][..],
        &["ip", "-6", "rule", "show"],
        &["ip", "-4", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
        &[
            "sysctl",
            "net.ipv4.ip_forward",
            "net.ipv6.conf.all.forwarding",
        ],
    ] {
        // IPv6 link-local addresses and routes appear whenever the kernel's
        // autoconfiguration gets to them: not something the scripts touch.
        for line in ns.output(args).lines().filter(|l| !l.contains("fe80:")) {
            all.push_str(line);
            all.push('\n');
        }
    }
    all
}

/// Issue 12 (g): the scripts own only what they add. A router that already
/// has a `fwmark 0x1/0x1 lookup 100` rule, a route in table 100 and its own
/// forwarding settings keeps all of them, byte for byte, after apply and
/// remove in both modes (and with --enable-forwarding, which restores).
#[test]
fn apply_and_remove_leave_preexisting_rules_routes_and_sysctls() {
    if !prerequisites_met("apply_and_remove_leave_preexisting_rules_routes_and_sysctls") {
        return;
    }
    let ns = Netns::new("own");
    let state = support::TempDir::new("own-state");
    let state = state.0.to_str().unwrap();
    // (No dummy module on every host: a veth pair inside the namespace.)
    ns.exec(&[
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ])
    .unwrap();
    ns.exec(&["ip", "link", "set", "d0", "up"]).unwrap();
    ns.exec(&["ip", "link", "set", "d1", "up"]).unwrap();
    ns.exec(&["ip", "addr", "add", "10.77.0.1/24", "dev", "d0"])
        .unwrap();
    for fam in ["-4", "-6"] {
        ns.exec(&[
            "ip", fam, "rule", "add", "fwmark", "0x1/0x1", "lookup", "100",
        ])
        .unwrap();
    }
    ns.exec(&[
        "ip",
        "route",
        "add",
        "10.88.0.0/16",
        "via",
        "10.77.0.2",
        "table",
        "100",
    ])
    .unwrap();
    ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])
        .unwrap();
    let before = routing_snapshot(&ns);
    let apply = root().join("scripts/apply-nftables.sh");
    let remove = root().join("scripts/remove-nftables.sh");
    let (apply, remove) = (apply.to_str().unwrap(), remove.to_str().unwrap());
    for (mode, extra) in [
        ("redirect", None),
        ("tproxy", None),
        ("tproxy", Some("--enable-forwarding")),
    ] {
        let mut args = vec![apply, "--mode", mode, "--state-dir", state];
        args.extend(extra);
        ns.exec(&args).unwrap_or_else(|e| panic!("{mode}: {e}"));
        let during = routing_snapshot(&ns);
        if mode == "tproxy" {
            // Its local routes were added next to the router's own route,
            // its rule was not (the router's identical one serves).
            assert!(
                during.contains("local default dev lo table 100"),
                "{during}"
            );
            assert!(during.contains("10.88.0.0/16 via 10.77.0.2 dev d0 table 100"));
            assert_eq!(during.matches("fwmark 0x1/0x1 lookup 100").count(), 2);
        } else {
            assert_eq!(during, before, "redirect touches no routing or sysctl");
        }
        if extra.is_some() {
            assert!(during.contains("net.ipv4.ip_forward = 1"), "{during}");
        }
        ns.exec(&[remove, "--state-dir", state]).unwrap();
        assert_eq!(
            routing_snapshot(&ns),
            before,
            "{mode} {extra:?}: not as found"
        );
    }
    // The record is acted on only in the shapes apply writes: a line that
    // names any other sysctl (say, written by someone else) changes nothing.
    let rp = |ns: &Netns| ns.output(&["sysctl", "-n", "net.ipv4.conf.all.rp_filter"]);
    let rp_before = rp(&ns);
    assert_ne!(rp_before.trim(), "2", "the record must try a change");
    std::fs::write(
        Path::new(state).join("installed"),
        "sysctl net.ipv4.conf.all.rp_filter 2\n",
    )
    .unwrap();
    ns.exec(&[remove, "--state-dir", state]).unwrap();
    assert_eq!(rp(&ns), rp_before);
}

/// Every shipped script answers `--help` with its usage comment and
/// nothing of its code (the help is the header comment, cut by line).
#[test]
fn scripts_answer_help_with_their_header_only() {
    let mut scripts: Vec<_> = std::fs::read_dir(root().join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.push(root().join("scripts/demo/topology.sh"));
    scripts.push(root().join("scripts/demo/ha-topology.sh"));
    scripts.push(root().join("scripts/demo/server-cert.sh"));
    scripts.push(root().join("scripts/demo/preflight.sh"));
    assert!(scripts.len() >= 8, "{scripts:?}");
    for script in scripts {
        let out = Command::new(&script).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: --help failed", script.display());
        assert!(
            text.lines().count() >= 2 && text.contains("sage"),
            "{}: --help says too little:\n{text}",
            script.display()
        );
        assert!(
            !text.lines().any(|l| l.starts_with("set -")) && !text.ends_with("\n\n"),
            "{}: --help prints code or a trailing blank line:\n{text}",
            script.display()
        );
    }
}

/// `systemd-analyze verify` accepts the shipped unit (paths pointed at this
/// build), and its offline security exposure stays below 2.5.
#[test]
fn systemd_unit_verifies_and_is_sandboxed() {
    let Ok(v) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIP systemd_unit_verifies_and_is_sandboxed: systemd-analyze not installed");
        return;
    };
    assert!(v.status.success());
    let dir = support::TempDir::new("unit");
    let unit = std::fs::read_to_string(root().join("systemd/misp-guard-gw.service"))
        .unwrap()
        .replace(
            "/usr/bin/misp-guard-gw",
            env!("CARGO_BIN_EXE_misp-guard-gw"),
        )
        .replace(
            "/usr/share/misp-guard-gw/scripts",
            root().join("scripts").to_str().unwrap(),
        );
    let path = dir.0.join("misp-guard-gw.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for misp-guard-gw.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in: {text}"));
    assert!(exposure < 2.5, "exposure {exposure}: {text}");
}

/// `run --nftables` renders from the config's listeners, so a listener
/// given only as a flag would never be captured: refused, naming the flags.
#[test]
fn run_with_nftables_refuses_listener_flags() {
    let config = root().join("config.sample.json");
    let out = Command::new(env!("CARGO_BIN_EXE_misp-guard-gw"))
        .args(["run", "--config", config.to_str().unwrap()])
        .args(["--nftables", "redirect", "--redirect", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--nftables") && err.contains("gateway.listeners"),
        "{err}"
    );
}
